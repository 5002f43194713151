"""Steps on several nodes through Kueue: one Workload for all the ranks, admitted together or not
at all, and placed by Kueue's topology-aware scheduling.

Each test installs the chart with Kueue's queue objects in its namespace (a ResourceFlavor for
the simulated H100 pool, optionally naming a Topology of the pool's block and rack labels, a
ClusterQueue with a GPU quota, the LocalQueue ``gpu``) and runs steps as the chart's pipeline
account.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from k8s_step_operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    QueueError,
    RanksPlaced,
    job_name,
)
from tests.cluster.addon_support import served
from tests.cluster.conftest import InstallChart, OperatorIdentity, write_kubeconfig
from tests.cluster.test_launch import Launch, pod_running, pods_of, step_info
from tests.cluster.test_launch_ranks import BLOCK, _block_node, node_labels
from tests.conftest import NODES_FILE, unavailable, wait_until

pytestmark = pytest.mark.cluster

RACK = "k8s-step-operator.io/topology-rack"


@pytest.fixture
def kueue_ranks(
    install_chart: InstallChart, namespace: str, gpu_pool: Any, api_client: k8s.ApiClient
) -> Callable[..., OperatorIdentity]:
    if not served(api_client, "kueue.x-k8s.io/v1beta2"):
        unavailable("Kueue is not installed in this cluster (kueue.x-k8s.io/v1beta2 not served)")
    if len(gpu_pool.nodes) < 4:
        unavailable(f"the h100 pool has {len(gpu_pool.nodes)} nodes; these tests need 4")

    def install(gpus: int, levels: list[str] | None = None) -> OperatorIdentity:
        kueue: dict[str, Any] = {
            "enabled": True,
            "createQueues": True,
            "apiVersion": "v1beta2",
            "resourceFlavor": {
                "nodeLabels": dict(gpu_pool.node_selector),
                "tolerations": [dict(t) for t in gpu_pool.tolerations],
            },
            "clusterQueue": {
                "queueingStrategy": "BestEffortFIFO",
                "nominalQuota": {"nvidia.com/gpu": str(gpus)},
            },
        }
        if levels:
            kueue["topology"] = {"levels": levels}
        return install_chart(namespace, values={"kueue": kueue})

    return install


@pytest.fixture
def queued(
    api_client: k8s.ApiClient, tmp_path: Path
) -> Iterator[Callable[[OperatorIdentity], KubernetesJobStepOperator]]:
    made: list[KubernetesJobStepOperator] = []

    def make(sa: OperatorIdentity) -> KubernetesJobStepOperator:
        kubeconfig = write_kubeconfig(tmp_path / "pipeline", api_client, sa.token, sa.namespace)
        op = KubernetesJobStepOperator(
            "k8s",
            config=KubernetesJobStepOperatorConfig(
                kubeconfig_path=str(kubeconfig),
                namespace=sa.namespace,
                image="localhost/step:1",
                image_pull_policy="IfNotPresent",
                service_account_name=sa.step_service_account,
                queue_name="gpu",
            ),
        )
        made.append(op)
        return op

    yield make
    for op in made:
        op.close()


def said(caplog: pytest.LogCaptureFixture, step: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "k8s_step_operator" and r.getMessage().startswith(f"step {step}:")
    ]


def test_a_gang_waits_for_quota_for_all_its_ranks_then_runs_them_together(
    kueue_ranks: Callable[..., OperatorIdentity],
    queued: Callable[[OperatorIdentity], KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    gpu_pool: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Quota for four 8-GPU nodes, one of them held by another step: the 4 x 8-GPU gang waits
    with Kueue's words (no rank starts alone), and runs when the quota frees."""
    sa = kueue_ranks(gpus=32)
    operator = queued(sa)
    blocker = step_info("blocker", gpus=8, duration="15s")
    gang = step_info("gang", gpus=8, num_nodes=4, duration="2s")
    gang_job = job_name(gang.run_id, "gang", gang.step_run_id, ranks=4)
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        holding = Launch(lambda: operator.launch(blocker, ["true"], {}))
        blocker_job = job_name(blocker.run_id, "blocker", blocker.step_run_id)
        wait_until("the blocker to run", lambda: pod_running(api_client, sa.namespace, blocker_job))
        waiting = Launch(lambda: operator.launch(gang, ["torchrun", "train.py"], {}))
        wait_until(
            "the gang to wait in Kueue's words",
            lambda: any("8 more needed" in m for m in said(caplog, "gang")),
            timeout=60,
        )
        # Admitted together or not at all: no rank of the gang runs while it waits.
        assert pods_of(api_client, sa.namespace, gang_job) == []
        holding.result(timeout=120)
        waiting.result(timeout=180)
    lines = said(caplog, "gang")
    queued_lines = [m for m in lines if "queued in LocalQueue gpu" in m]
    assert any(
        "insufficient unused quota for nvidia.com/gpu in flavor" in m and "8 more needed" in m
        for m in queued_lines
    ), lines
    assert any(m.startswith("step gang: admitted by Kueue") for m in lines), lines
    pods = pods_of(api_client, sa.namespace, gang_job)
    assert len(pods) == 4 and {p.spec.node_name for p in pods} <= set(gpu_pool.nodes)
    created = sorted(p.metadata.creation_timestamp.timestamp() for p in pods)
    assert created[-1] - created[0] < 5, "the ranks were created together"


def test_a_gang_the_cluster_queue_can_never_hold_fails_at_once(
    kueue_ranks: Callable[..., OperatorIdentity],
    queued: Callable[[OperatorIdentity], KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
) -> None:
    sa = kueue_ranks(gpus=24)
    operator = queued(sa)
    start = time.monotonic()
    with pytest.raises(QueueError) as raised:
        operator.launch(step_info("too-big", gpus=8, num_nodes=4), ["torchrun", "x"], {})
    assert time.monotonic() - start < 30
    text = str(raised.value)
    assert "Kueue can never admit it: nvidia.com/gpu: 32 requested" in text
    assert "current podset request (32) > maximum capacity (24)" in text
    wait_until(
        "the Job to be deleted",
        lambda: not k8s.BatchV1Api(api_client).list_namespaced_job(sa.namespace).items,
    )


def test_a_gang_with_a_topology_lands_in_one_block_that_fits_it(
    kueue_ranks: Callable[..., OperatorIdentity],
    queued: Callable[[OperatorIdentity], KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    gpu_pool: Any,
    namespace: str,
) -> None:
    """One node of block-a busy: Kueue places the two ranks that must share a block in block-b,
    and the step says so."""
    levels = topology_levels()
    sa = kueue_ranks(gpus=32, levels=levels)
    operator = queued(sa)
    busy = next(n for n in gpu_pool.nodes if node_labels(api_client, n)[BLOCK] == "block-a")
    blocker = _block_node(api_client, namespace, gpu_pool, busy)
    events: list[Any] = []
    operator.subscribe(events.append)
    try:
        info = step_info("together", gpus=8, num_nodes=2, duration="2s", topology=BLOCK)
        operator.launch(info, ["torchrun", "train.py"], {})
    finally:
        k8s.BatchV1Api(api_client).delete_namespaced_job(
            blocker, namespace, propagation_policy="Background"
        )
    (placed,) = [e for e in events if isinstance(e, RanksPlaced)]
    assert placed.level == BLOCK
    blocks = {node_labels(api_client, n)[BLOCK] for n in placed.nodes.values()}
    assert blocks == {"block-b"}
    assert placed.text.endswith(f"all in {BLOCK}=block-b")


def test_a_topology_level_the_flavor_lacks_fails_at_once_in_kueues_words(
    kueue_ranks: Callable[..., OperatorIdentity],
    queued: Callable[[OperatorIdentity], KubernetesJobStepOperator],
) -> None:
    sa = kueue_ranks(gpus=32, levels=[BLOCK])  # the nodes carry racks, the Topology does not
    operator = queued(sa)
    with pytest.raises(QueueError) as raised:
        operator.launch(
            step_info("racked", gpus=8, num_nodes=2, topology=RACK), ["torchrun", "x"], {}
        )
    assert "does not contain the requested level" in str(raised.value)


def topology_levels() -> list[str]:
    """The topology levels of ``e2e/nodes.yaml`` (block, then rack)."""
    levels = (yaml.safe_load(NODES_FILE.read_text()).get("topology") or {}).get("levels") or []
    if not levels:
        unavailable("e2e/nodes.yaml lists no topology levels")
    return [str(level) for level in levels]
