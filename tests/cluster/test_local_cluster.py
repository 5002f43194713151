"""The cluster the rest of the suite relies on behaves like Kubernetes does for GPU Jobs.

Jobs are plain dicts here, on purpose: these tests check the cluster, not the library's builder.
The scheduling tests run against any cluster labelled like ``e2e/nodes.yaml``; the tests that
drive a pod's outcome through ``sim.k8s-step-operator.io/*`` annotations also give the container
a command with the same outcome, so a real kubelet agrees with the simulated one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import wait_until

pytestmark = pytest.mark.cluster

# Pod annotations the simulated kubelet acts on (e2e/kwok/pod-stages.yaml).
SIM_RUN_DURATION = "sim.k8s-step-operator.io/run-duration"
SIM_EXIT_CODE = "sim.k8s-step-operator.io/exit-code"
SIM_REASON = "sim.k8s-step-operator.io/reason"
SIM_START_DELAY = "sim.k8s-step-operator.io/start-delay"
# The fixtures' types (tests/conftest.py); conftest is not importable as a module.
GpuPool = Any
LocalCluster = Any

IMAGE = "busybox:1.36"


def job(
    name: str,
    *,
    limits: dict[str, str] | None = None,
    placement: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": IMAGE,
        "command": command or ["sh", "-c", "exit 0"],
    }
    if limits:
        container["resources"] = {"limits": limits}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [container], **(placement or {})},
            },
        },
    }


def job_condition(batch: client.BatchV1Api, ns: str, name: str, kind: str) -> Any:
    j = batch.read_namespaced_job(name, ns)
    for c in j.status.conditions or []:
        if c.type == kind and c.status == "True":
            return c
    return None


def job_pods(core: client.CoreV1Api, ns: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items)


def untolerated(pod_spec: Any, taints: list[Any]) -> list[Any]:
    tol = pod_spec.tolerations or []

    def tolerates(t: Any) -> bool:
        for x in tol:
            if x.effect and x.effect != t.effect:
                continue
            if x.operator == "Exists" and (not x.key or x.key == t.key):
                return True
            if x.key == t.key and (x.value or "") == (t.value or ""):
                return True
        return False

    return [t for t in taints if t.effect in ("NoSchedule", "NoExecute") and not tolerates(t)]


def test_gpu_job_lands_on_an_h100_node_and_completes(
    api_client: client.ApiClient, namespace: str, gpu_pool: GpuPool
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(
        namespace, job("train", limits=gpu_pool.limits(2), placement=gpu_pool.placement())
    )
    wait_until("Job Complete", lambda: job_condition(batch, namespace, "train", "Complete"), 60)
    (pod,) = job_pods(core, namespace, "train")
    assert pod.spec.node_name in gpu_pool.nodes
    assert pod.status.phase == "Succeeded"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 0
    assert term.reason == "Completed"
    assert term.container_id and term.started_at and term.finished_at
    conds = {c.type: c.status for c in pod.status.conditions}
    assert conds["PodScheduled"] == "True"
    assert conds["Ready"] == "False"  # a finished pod is no longer ready


def test_more_gpus_than_any_node_has_stays_pending_with_the_reason(
    api_client: client.ApiClient, namespace: str, gpu_pool: GpuPool
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    too_many = gpu_pool.per_node + 1
    batch.create_namespaced_job(
        namespace, job("huge", limits=gpu_pool.limits(too_many), placement=gpu_pool.placement())
    )

    def unschedulable() -> Any:
        for p in job_pods(core, namespace, "huge"):
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False":
                    return c
        return None

    cond = wait_until("PodScheduled=False", unschedulable, 30)
    assert cond.reason == "Unschedulable"
    assert f"Insufficient {gpu_pool.resource}" in cond.message
    (pod,) = job_pods(core, namespace, "huge")
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name


def test_without_the_toleration_tainted_gpu_nodes_are_not_used(
    api_client: client.ApiClient, namespace: str, gpu_pool: GpuPool
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    assert gpu_pool.taints, "the default GPU pool is expected to be tainted"
    # Aimed at the GPU nodes but without their toleration: nowhere to go.
    batch.create_namespaced_job(
        namespace,
        job(
            "no-tol",
            limits=gpu_pool.limits(1),
            placement={"nodeSelector": dict(gpu_pool.node_selector)},
        ),
    )
    # No placement at all: anywhere but a node with a taint it does not tolerate.
    batch.create_namespaced_job(namespace, job("anywhere"))

    def pending_reason() -> Any:
        for p in job_pods(core, namespace, "no-tol"):
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False":
                    return c
        return None

    cond = wait_until("PodScheduled=False", pending_reason, 30)
    assert "untolerated taint" in cond.message

    (pod,) = wait_until(
        "the untargeted pod to be scheduled",
        lambda: [p for p in job_pods(core, namespace, "anywhere") if p.spec.node_name],
        30,
    )
    assert pod.spec.node_name not in gpu_pool.nodes
    node = core.read_node(pod.spec.node_name)
    assert untolerated(pod.spec, node.spec.taints or []) == []


def test_failed_pod_fails_the_job_with_its_exit_code(
    api_client: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(
        namespace,
        job("crash", annotations={SIM_EXIT_CODE: "3"}, command=["sh", "-c", "exit 3"]),
    )
    cond = wait_until("Job Failed", lambda: job_condition(batch, namespace, "crash", "Failed"), 60)
    assert cond.reason == "BackoffLimitExceeded"
    (pod,) = job_pods(core, namespace, "crash")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 3
    assert term.reason == "Error"


def test_simulated_oom_kill_reports_reason_and_137(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(
        namespace, job("oom", annotations={SIM_EXIT_CODE: "137", SIM_REASON: "OOMKilled"})
    )
    wait_until("Job Failed", lambda: job_condition(batch, namespace, "oom", "Failed"), 60)
    (pod,) = job_pods(core, namespace, "oom")
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (137, "OOMKilled")


def test_start_delay_and_run_duration_shape_the_timeline(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    t0 = time.monotonic()
    batch.create_namespaced_job(
        namespace,
        job("timed", annotations={SIM_START_DELAY: "1s", SIM_RUN_DURATION: "2s"}),
    )
    wait_until(
        "Running",
        lambda: [p for p in job_pods(core, namespace, "timed") if p.status.phase == "Running"],
        30,
    )
    running_at = time.monotonic() - t0
    wait_until("Complete", lambda: job_condition(batch, namespace, "timed", "Complete"), 30)
    done_at = time.monotonic() - t0
    assert running_at >= 1.0
    assert done_at - running_at >= 1.5
    assert done_at < 15


def test_pod_logs_are_served_through_the_api(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, job("logs"))
    wait_until("Complete", lambda: job_condition(batch, namespace, "logs", "Complete"), 30)
    (pod,) = job_pods(core, namespace, "logs")
    text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="main")
    assert "simulated container finished" in text


def test_a_pod_gets_its_own_log_and_followers_see_appended_lines(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, job("talk", annotations={SIM_RUN_DURATION: "20s"}))
    (pod,) = wait_until(
        "Running",
        lambda: [p for p in job_pods(core, namespace, "talk") if p.status.phase == "Running"],
        30,
    )
    name = pod.metadata.name
    local_cluster.write_pod_log(namespace, name, ["epoch 1 loss=0.9", "epoch 2 loss=0.5"])
    text = wait_until(
        "the pod's own log",
        lambda: (t := core.read_namespaced_pod_log(name, namespace)) and "epoch 2" in t and t,
        10,
    )
    assert text.splitlines() == ["epoch 1 loss=0.9", "epoch 2 loss=0.5"]

    resp = core.read_namespaced_pod_log(
        name, namespace, follow=True, timestamps=True, _preload_content=False
    )
    try:
        seen: list[str] = []
        lines = resp.stream(amt=None, decode_content=True)
        first = next(lines).decode()
        seen.extend(first.splitlines())
        local_cluster.write_pod_log(namespace, name, ["epoch 3 loss=0.2"])
        deadline = time.monotonic() + 15
        while not any("epoch 3" in line for line in seen) and time.monotonic() < deadline:
            seen.extend(next(lines).decode().splitlines())
        assert any(line.endswith("epoch 3 loss=0.2") for line in seen)
        # timestamps=True prefixes each line with the RFC 3339 time the kubelet recorded.
        assert seen[0].split(" ", 1)[0].endswith("Z")
    finally:
        # Close, not release_conn(): a followed stream never ends, and a connection put back
        # in the pool would hand its remaining bytes to the next request.
        resp.close()


def test_nodes_added_at_runtime_take_pods(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    label = f"extra-{uuid.uuid4().hex[:6]}"
    name = f"gpu-{label}"
    names = local_cluster.add_nodes(
        [
            {
                "name": name,
                "labels": {"k8s-step-operator.io/pool": label},
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "10", "nvidia.com/gpu": "1"},
            }
        ]
    )
    try:
        batch.create_namespaced_job(
            namespace,
            job(
                "extra",
                limits={"nvidia.com/gpu": "1"},
                placement={
                    "nodeSelector": {"k8s-step-operator.io/pool": label},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            ),
        )
        wait_until("Complete", lambda: job_condition(batch, namespace, "extra", "Complete"), 30)
        (pod,) = job_pods(core, namespace, "extra")
        assert pod.spec.node_name == name
    finally:
        local_cluster.remove_nodes(names)


def test_cluster_keeps_working_across_an_apiserver_restart(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster, gpu_pool: GpuPool
) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(
        namespace, job("before", limits=gpu_pool.limits(1), placement=gpu_pool.placement())
    )
    wait_until("Complete", lambda: job_condition(batch, namespace, "before", "Complete"), 30)

    local_cluster.restart("kube-apiserver")
    assert local_cluster.is_healthy("kube-apiserver")

    # State survived, and every controller reconnects: a new Job runs end to end. Clients back
    # off while the API server is gone (client-go: up to 30 s), so allow for that.
    assert job_condition(batch, namespace, "before", "Complete") is not None
    batch.create_namespaced_job(
        namespace, job("after", limits=gpu_pool.limits(1), placement=gpu_pool.placement())
    )
    wait_until("Complete", lambda: job_condition(batch, namespace, "after", "Complete"), 90)


def test_jobs_wait_while_the_controller_manager_is_down(
    api_client: client.ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    with local_cluster.stopped("kube-controller-manager"):
        batch.create_namespaced_job(namespace, job("paused"))
        time.sleep(1.5)
        assert job_pods(core, namespace, "paused") == []
    wait_until("Complete", lambda: job_condition(batch, namespace, "paused", "Complete"), 60)
