"""A real torch.distributed all-reduce over gloo, launched by torchrun, across two pods of the
real node: the ranks find rank 0 by name (the step's headless Service, cluster DNS) and talk over
the pod network.

The step image is the torch image (``python e2e/realnode/node.py images torch``): Debian's
python3-torch (CPU, gloo) with this project and the test's program
(``tests/realnode/torch_steps.py``).
"""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from k8s_step_operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    RanksPlaced,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    job_name,
)
from tests.conftest import poll, unavailable

pytestmark = pytest.mark.realnode

TORCH_IMAGE = "localhost/k8s-step-operator-torch:dev"
REAL = "k8s-step-operator.io/real-node"
PLACEMENT = {
    "node_selector": {REAL: "true"},
    "tolerations": [
        {"key": REAL, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
}
# The image's torch (Debian 12's 1.13) reads torchrun's default "--redirects 0 --tee 0" as None on
# Python 3.11 (its Std.from_str) and fails to start any worker: stdout is teed explicitly.
TORCHRUN = [
    "python3",
    "-m",
    "torch.distributed.run",
    "--redirects",
    "1",
    "--tee",
    "1",
    "-m",
    "tests.realnode.torch_steps",
]
SUM = re.compile(r"rank (\d) of 2 .*: all_reduce sum (\S+), expected 3$")


@pytest.fixture
def operator(
    kubeconfig_path: Path, namespace: str, api_client: k8s.ApiClient
) -> KubernetesJobStepOperator:
    def listed() -> bool:
        nodes = k8s.CoreV1Api(api_client).list_node(label_selector=f"{REAL}=true").items
        return any(TORCH_IMAGE in (i.names or ()) for n in nodes for i in n.status.images or ())

    # The kubelet lists an image imported a moment ago at its next image-cache refresh (30 s).
    if not poll(listed, 60):
        unavailable(
            f"{TORCH_IMAGE} is not on the real node: python e2e/realnode/node.py images torch"
        )
    return KubernetesJobStepOperator(
        "torch",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=str(kubeconfig_path),
            namespace=namespace,
            image=TORCH_IMAGE,
            image_pull_policy="Never",
            pending_timeout=120,
            **PLACEMENT,
        ),
    )


def test_torchrun_all_reduces_across_two_pods(
    operator: KubernetesJobStepOperator,
    api_client: k8s.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=f"torch-{uuid.uuid4().hex[:8]}",
        pipeline_step_name="allreduce",
        config=StepConfiguration(
            name="allreduce",
            resource_settings=ResourceSettings(memory="1GiB"),
            settings={"step_operator.kubernetes_job": {"num_nodes": 2}},
        ),
    )
    events: list[Any] = []
    operator.subscribe(events.append)
    with caplog.at_level(logging.INFO):
        operator.launch(info, TORCHRUN, {})
    lines = [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator.step"]
    sums = {}
    for line in lines:
        prefix, _, text = line.partition("] ")
        found = SUM.search(text)
        if found:
            # Each rank's line reached the caller with its own rank's prefix.
            assert prefix == f"[rank {found.group(1)}", line
            sums[int(found.group(1))] = float(found.group(2))
    assert sums == {0: 3.0, 1: 3.0}, "\n".join(lines)
    name = job_name(info.run_id, "allreduce", info.step_run_id, ranks=2)
    pods = (
        k8s.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
        .items
    )
    assert len(pods) == 2 and all(p.status.phase == "Succeeded" for p in pods)
    assert {p.spec.node_name for p in pods} == {"real-node-0"}
    # Two pods, two addresses: the ranks met over the pod network, not on one loopback.
    assert len({p.status.pod_ip for p in pods}) == 2
    (placed,) = [e for e in events if isinstance(e, RanksPlaced)]
    assert set(placed.nodes.values()) == {"real-node-0"}
