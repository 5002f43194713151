"""launch() on the real node: the real entrypoint in a real container, real logs, real exits."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from k8s_step_operator import (
    ImageError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    OOMKilledError,
    ResourceSettings,
    StepConfiguration,
    StepFailedError,
    StepRunInfo,
)
from k8s_step_operator import StepOperatorEntrypointConfiguration as Entry

pytestmark = pytest.mark.realnode

REAL = "k8s-step-operator.io/real-node"
PLACEMENT = {
    "node_selector": {REAL: "true"},
    # The real node is also a GPU node: steps without GPUs must tolerate its GPU taint too.
    "tolerations": [
        {"key": REAL, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
}


@pytest.fixture
def operator(kubeconfig_path: Path, namespace: str) -> KubernetesJobStepOperator:
    return KubernetesJobStepOperator(
        "real",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=str(kubeconfig_path),
            namespace=namespace,
            image="localhost/k8s-step-operator-python:dev",
            image_pull_policy="Never",
            pending_timeout=120,
            **PLACEMENT,
        ),
    )


def run(
    operator: KubernetesJobStepOperator,
    function: str,
    *,
    env: dict[str, str] | None = None,
    gpus: int = 1,
    memory: str | None = "256MiB",
) -> StepRunInfo:
    step = function.replace("_", "-")
    info = StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=f"real-{uuid.uuid4().hex[:8]}",
        pipeline_step_name=step,
        config=StepConfiguration(
            name=step, resource_settings=ResourceSettings(gpu_count=gpus, memory=memory)
        ),
    )
    command = Entry.get_entrypoint_command() + Entry.get_entrypoint_arguments(
        step_name=step,
        step_source=f"tests.realnode.real_steps:{function}",
        step_run_id=info.step_run_id,
    )
    operator.launch(info, command, env or {})
    return info


def step_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator.step"]


def test_real_step_sees_its_environment_and_its_output_comes_back(
    operator: KubernetesJobStepOperator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        run(operator, "greet", env={"STEP_GREETING": "from-the-caller"})
    lines = step_lines(caplog)
    assert "STEP_GREETING=from-the-caller" in lines
    assert "uid=1000" in lines  # the restricted profile's default user
    phases = caplog.text
    assert "running on real-node-0" in phases or "real-node" in phases


def test_real_step_failure_carries_exit_code_and_traceback(
    operator: KubernetesJobStepOperator,
) -> None:
    with pytest.raises(StepFailedError) as raised:
        run(operator, "explode")
    err = raised.value
    assert err.exit_code == 1
    assert any("ValueError: the step failed on purpose" in line for line in err.log_tail)
    assert "ValueError: the step failed on purpose" in str(err)


def test_real_oom_kill_is_reported(operator: KubernetesJobStepOperator) -> None:
    with pytest.raises(OOMKilledError) as raised:
        run(operator, "hog_memory", memory="64MiB", gpus=0)
    assert raised.value.exit_code == 137
    assert raised.value.reason == "OOMKilled"


def test_gpu_step_lands_on_the_real_node(
    operator: KubernetesJobStepOperator, api_client: Any, namespace: str
) -> None:
    from kubernetes import client as k8s

    info = run(operator, "greet", gpus=1)
    from k8s_step_operator import job_name

    name = job_name(info.run_id, "greet", info.step_run_id)
    (pod,) = (
        k8s.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
        .items
    )
    assert pod.spec.node_name == "real-node-0"
    limits = pod.spec.containers[0].resources.limits
    assert limits["nvidia.com/gpu"] == "1"
    assert pod.status.phase == "Succeeded"


def test_an_image_whose_registry_refuses_the_connection_fails_fast_said_once(
    kubeconfig_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The node's containerd reaches no registry (its proxy is a closed loopback port): "connection
    # refused" will not get better. It used to fail after 309 s, with 12 repeated pull lines.
    operator = KubernetesJobStepOperator(
        "real",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=str(kubeconfig_path),
            namespace=namespace,
            image="localhost/does-not-exist:1.0",  # default pull policy: IfNotPresent
            pending_timeout=120,
            **PLACEMENT,
        ),
    )
    info = StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=f"real-{uuid.uuid4().hex[:8]}",
        pipeline_step_name="nopull",
        config=StepConfiguration(name="nopull"),
    )
    start = time.monotonic()
    with caplog.at_level(logging.INFO, "k8s_step_operator"), pytest.raises(ImageError) as raised:
        operator.launch(info, ["true"], {})
    took = time.monotonic() - start
    message = str(raised.value)
    assert "connection refused" in message, message
    assert "will not get better" in message, message
    assert took < 60, f"took {took:.0f}s: the pull bound decided, not the cause"
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == "k8s_step_operator" and "cannot be pulled" in r.getMessage()
    ]
    assert len(said) == 1, said  # once, not at every retry
    operator.close()
