"""``launch`` through Kueue, with the chart's queue objects, as the chart's pipeline account.

Each test installs the chart with ``kueue.enabled`` and ``kueue.createQueues`` in its namespace:
a ResourceFlavor for the static H100 pool, a ClusterQueue with a GPU quota, a LocalQueue ``gpu``
and (where needed) WorkloadPriorityClasses and preemption. Kueue v0.17.0 runs in the local
cluster; these tests see it admit, hold back for quota, preempt and re-admit steps, and the
operator say so in Kueue's words.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from k8s_step_operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    QueueError,
    job_name,
)
from k8s_step_operator._doctor.probe import run_doctor
from k8s_step_operator._doctor.report import format_report
from tests.cluster.addon_support import served
from tests.cluster.conftest import InstallChart, OperatorIdentity, write_kubeconfig
from tests.cluster.test_launch import Launch, pod_running, step_info
from tests.conftest import unavailable, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def kueue_chart(
    install_chart: InstallChart, namespace: str, gpu_pool: Any, api_client: k8s.ApiClient
) -> Callable[..., OperatorIdentity]:
    if not served(api_client, "kueue.x-k8s.io/v1beta2"):
        unavailable("Kueue is not installed in this cluster (kueue.x-k8s.io/v1beta2 not served)")

    def install(gpus: int = 8, preemption: dict[str, Any] | None = None) -> OperatorIdentity:
        queue: dict[str, Any] = {
            "queueingStrategy": "BestEffortFIFO",
            "nominalQuota": {"nvidia.com/gpu": str(gpus)},
        }
        if preemption:
            queue["preemption"] = preemption
        return install_chart(
            namespace,
            values={
                "kueue": {
                    "enabled": True,
                    "createQueues": True,
                    "apiVersion": "v1beta2",
                    "resourceFlavor": {
                        "nodeLabels": dict(gpu_pool.node_selector),
                        "tolerations": [dict(t) for t in gpu_pool.tolerations],
                    },
                    "clusterQueue": queue,
                    "workloadPriorityClasses": [
                        {"name": f"{namespace}-low", "value": 100},
                        {"name": f"{namespace}-high", "value": 1000},
                    ],
                }
            },
        )

    return install


@pytest.fixture
def queued_operator(
    api_client: k8s.ApiClient, tmp_path: Path
) -> Callable[[OperatorIdentity], KubernetesJobStepOperator]:
    made: list[KubernetesJobStepOperator] = []

    def make(sa: OperatorIdentity, **config: Any) -> KubernetesJobStepOperator:
        kubeconfig = write_kubeconfig(tmp_path / "pipeline", api_client, sa.token, sa.namespace)
        op = KubernetesJobStepOperator(
            "k8s",
            config=KubernetesJobStepOperatorConfig(
                kubeconfig_path=str(kubeconfig),
                namespace=sa.namespace,
                image="localhost/step:1",
                image_pull_policy="IfNotPresent",
                service_account_name=sa.step_service_account,
                **{"queue_name": "gpu", **config},
            ),
        )
        made.append(op)
        return op

    yield make  # type: ignore[misc]
    for op in made:
        op.close()


def lines_of(caplog: pytest.LogCaptureFixture, step: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "k8s_step_operator" and r.getMessage().startswith(f"step {step}:")
    ]


def test_a_step_within_quota_is_admitted_with_its_flavor_and_runs(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sa = kueue_chart()
    operator = queued_operator(sa)
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        operator.launch(step_info("fits", gpus=2), ["true"], {})
    said = lines_of(caplog, "fits")
    admitted = [m for m in said if m.startswith("step fits: admitted by Kueue")]
    assert admitted, said
    queue = f"{sa.release}-k8s-step-operator-gpu"  # the chart's ClusterQueue and flavor
    assert f"ClusterQueue {queue} with flavor nvidia.com/gpu={queue}" in admitted[0]
    assert any("succeeded" in m for m in said)


def test_the_step_beyond_the_quota_waits_with_kueues_reason_then_runs(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sa = kueue_chart(gpus=8)
    operator = queued_operator(sa)
    first = step_info("first", gpus=6, duration="8s")
    second = step_info("second", gpus=6, duration="1s")
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        running = Launch(lambda: operator.launch(first, ["true"], {}))
        name = job_name(first.run_id, "first", first.step_run_id)
        wait_until("the first step to run", lambda: pod_running(api_client, sa.namespace, name))
        start = time.monotonic()
        operator.launch(second, ["true"], {})
        waited = time.monotonic() - start
        running.result(timeout=120)
    said = lines_of(caplog, "second")
    queued = [m for m in said if "queued in LocalQueue gpu" in m]
    assert any(
        "insufficient unused quota for nvidia.com/gpu in flavor" in m and "4 more needed" in m
        for m in queued
    ), said
    assert any(f"(ClusterQueue {sa.release}-k8s-step-operator-gpu)" in m for m in queued), said
    assert any("admitted by Kueue" in m for m in said)
    assert waited > 3, "the second step was not held back by the quota"


def test_a_preempted_step_is_queued_again_and_completes(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sa = kueue_chart(gpus=8, preemption={"withinClusterQueue": "LowerPriority"})
    operator = queued_operator(sa)
    low = step_info("low", gpus=8, duration="12s", workload_priority_class=f"{namespace}-low")
    high = step_info("high", gpus=8, duration="2s", workload_priority_class=f"{namespace}-high")
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        background = Launch(lambda: operator.launch(low, ["true"], {}))
        name = job_name(low.run_id, "low", low.step_run_id)
        wait_until("the low step to run", lambda: pod_running(api_client, sa.namespace, name))
        operator.launch(high, ["true"], {})
        background.result(timeout=180)  # re-admitted after the high one, and completed
    said = lines_of(caplog, "low")
    assert any(
        "preempted by Kueue (Preempted: Preempted to accommodate a workload" in m for m in said
    ), said
    assert sum(m.startswith("step low: admitted by Kueue") for m in said) == 2, said
    assert any("succeeded" in m for m in said)


def test_a_missing_local_queue_fails_at_once(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
) -> None:
    sa = kueue_chart()
    operator = queued_operator(sa, queue_name="nope", queue_timeout=300)
    start = time.monotonic()
    with pytest.raises(QueueError) as raised:
        operator.launch(step_info("lost", gpus=1), ["true"], {})
    assert time.monotonic() - start < 10
    assert "LocalQueue nope" in str(raised.value)
    assert list(k8s.BatchV1Api(api_client).list_namespaced_job(sa.namespace).items) == []


def cluster_queue_of(sa: OperatorIdentity) -> str:
    return f"{sa.release}-k8s-step-operator-gpu"  # the chart's ClusterQueue


def patch_cluster_queue(api_client: k8s.ApiClient, name: str, body: Any, manager: str) -> None:
    """Change the ClusterQueue as an admin would, as ``manager``."""
    k8s.CustomObjectsApi(api_client).patch_cluster_custom_object(
        "kueue.x-k8s.io", "v1beta2", "clusterqueues", name, body, field_manager=manager
    )


def test_a_request_above_what_the_queue_can_ever_lend_fails_at_once(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
) -> None:
    # 16 GPUs through an 8-GPU ClusterQueue with no cohort: it used to say "queued" forever.
    sa = kueue_chart(gpus=8)
    operator = queued_operator(sa)
    start = time.monotonic()
    with pytest.raises(QueueError) as raised:
        operator.launch(step_info("huge", gpus=16), ["true"], {})
    assert time.monotonic() - start < 30
    message = str(raised.value)
    assert (
        f"Kueue can never admit it: nvidia.com/gpu: 16 requested, ClusterQueue "
        f"{cluster_queue_of(sa)} can lend at most 8"
    ) in message, message
    assert "> maximum capacity (8)" in message, message  # Kueue's own words follow
    assert list(k8s.BatchV1Api(api_client).list_namespaced_job(sa.namespace).items) == []


def test_a_paused_cluster_queue_waits_saying_who_paused_it_and_runs_when_resumed(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It used to fail at once ("ClusterQueue ... is inactive") and delete the Job.
    sa = kueue_chart(gpus=8)
    queue = cluster_queue_of(sa)
    patch_cluster_queue(api_client, queue, {"spec": {"stopPolicy": "Hold"}}, "admin-maintenance")
    operator = queued_operator(sa, queue_timeout=300)
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        running = Launch(lambda: operator.launch(step_info("held", gpus=1), ["true"], {}))

        def said_stopped() -> str | None:
            found = [m for m in lines_of(caplog, "held") if f"ClusterQueue {queue} is stopped" in m]
            return found[0] if found else None

        line = wait_until("the step to say the queue is stopped", said_stopped, 60)
        assert not running.done.is_set(), "the step did not wait for the paused queue"
        patch_cluster_queue(api_client, queue, {"spec": {"stopPolicy": "None"}}, "admin-back")
        running.result(timeout=120)
    assert "(spec.stopPolicy Hold, set by admin-maintenance at " in line, line
    assert "Kueue keeps the step and admits it when the queue resumes" in line, line
    assert any(m.startswith("step held: admitted by Kueue") for m in lines_of(caplog, "held"))


def test_a_paused_local_queue_waits_saying_who_paused_it_and_runs_when_resumed(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The LocalQueue's own pause (a team's queue held, the ClusterQueue still active) waits too.
    sa = kueue_chart(gpus=8)
    custom = k8s.CustomObjectsApi(api_client)

    def patch_local_queue(policy: str, manager: str) -> None:
        custom.patch_namespaced_custom_object(
            "kueue.x-k8s.io",
            "v1beta2",
            sa.namespace,
            "localqueues",
            "gpu",
            {"spec": {"stopPolicy": policy}},
            field_manager=manager,
        )

    patch_local_queue("Hold", "team-lead")
    operator = queued_operator(sa, queue_timeout=300)
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        running = Launch(lambda: operator.launch(step_info("lqheld", gpus=1), ["true"], {}))

        def said_stopped() -> str | None:
            found = [m for m in lines_of(caplog, "lqheld") if "LocalQueue gpu is stopped" in m]
            return found[0] if found else None

        line = wait_until("the step to say the LocalQueue is stopped", said_stopped, 60)
        assert not running.done.is_set(), "the step did not wait for the paused LocalQueue"
        patch_local_queue("None", "team-lead-back")
        running.result(timeout=120)
    assert "(spec.stopPolicy Hold, set by team-lead at " in line, line
    assert "Kueue keeps the step and admits it when the queue resumes" in line, line
    assert any(m.startswith("step lqheld: admitted by Kueue") for m in lines_of(caplog, "lqheld"))


def test_a_cluster_queue_broken_by_its_configuration_is_named_and_fails_after_the_grace(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
) -> None:
    sa = kueue_chart(gpus=8)
    queue = cluster_queue_of(sa)
    check = f"{sa.namespace}-missing-check"
    patch_cluster_queue(
        api_client,
        queue,
        {"spec": {"admissionChecksStrategy": {"admissionChecks": [{"name": check}]}}},
        "admin",
    )
    operator = queued_operator(sa, queue_timeout=300, missing_config_grace=5)
    start = time.monotonic()
    with pytest.raises(QueueError) as raised:
        operator.launch(step_info("broken", gpus=1), ["true"], {})
    waited = time.monotonic() - start
    message = str(raised.value)
    assert f"ClusterQueue {queue} is inactive (AdmissionCheckNotFound)" in message, message
    assert f"references missing AdmissionCheck(s): {check}" in message, message
    assert 5 <= waited < 60, waited


def test_doctor_reports_the_local_queue_and_its_gpu_quota_and_usage(
    kueue_chart: Callable[..., OperatorIdentity],
    queued_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
) -> None:
    sa = kueue_chart(gpus=8)
    operator = queued_operator(sa)
    info = step_info("holds", gpus=6, duration="20s")
    holding = Launch(lambda: operator.launch(info, ["true"], {}))
    name = job_name(info.run_id, "holds", info.step_run_id)
    wait_until("the step to run", lambda: pod_running(api_client, sa.namespace, name))

    def reported() -> str | None:
        text = format_report(run_doctor(sa.api_client, sa.namespace))
        return text if "uses" in text and "nvidia.com/gpu=6" in text else None

    try:
        text = wait_until("doctor to see the usage", reported, 30)
    except AssertionError:
        print(format_report(run_doctor(sa.api_client, sa.namespace)))
        raise
    assert f"gpu -> ClusterQueue {sa.release}-k8s-step-operator-gpu" in text, text
    assert "nvidia.com/gpu" in text and "8" in text, text
    holding.result(timeout=120)
