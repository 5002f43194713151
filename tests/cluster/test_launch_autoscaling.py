"""``launch`` on GPU pools that Karpenter grows from zero, as the chart's pipeline account.

The local cluster runs Karpenter's KWOK provider with the NodePools of
``e2e/karpenter/nodepools.yaml`` (pool ``autoscaled-h100``: H100 x8 nodes, at most 16 GPUs).
A step aimed there starts with no node at all: it must wait while Karpenter adds one, then run;
a step no NodePool can serve must fail at once in Karpenter's words; a step beyond the NodePool's
GPU limit must say so.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from k8s_step_operator import KubernetesJobStepOperator, UnschedulableError, job_name
from tests.cluster import test_launch
from tests.cluster.addon_support import custom, served
from tests.cluster.test_launch import Launch, pod_running, step_info
from tests.conftest import load_cluster_module, unavailable, wait_until

# The launch tests' fixtures: the chart's pipeline account and an operator acting as it.
pipeline_kubeconfig = test_launch.pipeline_kubeconfig
make_operator = test_launch.make_operator

pytestmark = pytest.mark.cluster

POOL = "autoscaled-h100"


@pytest.fixture(scope="module")
def pool(api_client: k8s.ApiClient) -> Iterator[dict[str, Any]]:
    """The autoscaled H100 pool; afterwards, wait until Karpenter took its nodes away."""
    if not served(api_client, "karpenter.sh/v1"):
        unavailable("Karpenter is not installed in this cluster (karpenter.sh/v1 not served)")
    pools = load_cluster_module().autoscaled_pools()
    if POOL not in pools:
        unavailable(f"pool {POOL} is not described in e2e/nodes.yaml")
    yield pools[POOL]

    def gone() -> bool:
        nodes = k8s.CoreV1Api(api_client).list_node(
            label_selector=f"k8s-step-operator.io/pool={POOL}"
        )
        claims = custom(api_client).list_cluster_custom_object(
            "karpenter.sh", "v1", "nodeclaims", label_selector=f"karpenter.sh/nodepool={POOL}"
        )
        return not nodes.items and not claims["items"]

    wait_until("Karpenter to remove the nodes it added", gone, 150, 1)


def on_pool(
    pool: dict[str, Any],
    step: str,
    gpus: int,
    *,
    selector: dict[str, str] | None = None,
    **settings: Any,
) -> Any:
    return step_info(
        step,
        gpus=gpus,
        node_selector={**pool["node_selector"], **(selector or {})},
        tolerations=[
            {"key": t["key"], "operator": t["operator"], "effect": t["effect"]}
            for t in pool["tolerations"]
        ],
        **settings,
    )


def test_a_step_on_a_pool_at_zero_waits_for_its_node_then_runs(
    make_operator: Callable[..., KubernetesJobStepOperator],
    pool: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator = make_operator()
    info = on_pool(pool, "grows", 1, duration="2s")
    start = time.monotonic()
    with caplog.at_level(logging.INFO, "k8s_step_operator"):
        operator.launch(info, ["true"], {})
    took = time.monotonic() - start
    phases = [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator"]
    scaling = [m for m in phases if "scaling up" in m]
    assert scaling, f"no scaling-up phase in {phases}"
    assert "Karpenter: Pod should schedule on: nodeclaim/autoscaled-h100-" in scaling[0]
    assert any("succeeded" in m for m in phases)
    assert took < 120
    operator.close()


def test_a_gpu_no_nodepool_offers_fails_fast_in_karpenters_words(
    make_operator: Callable[..., KubernetesJobStepOperator], pool: dict[str, Any]
) -> None:
    operator = make_operator()
    # The pool's NodePool launches H100 x8 only; a B200 is in no instance type it may use.
    info = on_pool(
        pool, "b200", 1, selector={"nvidia.com/gpu.product": "NVIDIA-B200"}, pending_timeout=300
    )
    start = time.monotonic()
    with pytest.raises(UnschedulableError) as raised:
        operator.launch(info, ["true"], {})
    took = time.monotonic() - start
    message = str(raised.value)
    assert "Karpenter will not add one: Failed to schedule pod" in message, message
    assert took < 60, f"took {took:.0f}s: the pending timeout decided, not Karpenter's answer"
    operator.close()


def test_a_step_beyond_the_nodepools_gpu_limit_says_so(
    make_operator: Callable[..., KubernetesJobStepOperator],
    pool: dict[str, Any],
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator = make_operator()
    run = f"run-{uuid.uuid4().hex[:8]}"
    # Two 8-GPU steps take the NodePool's 16 GPUs; a third has to wait for the limit.
    holds = [on_pool(pool, f"hold{i}", 8, run=run, duration="5m") for i in range(2)]
    holders = [Launch(lambda info=info: operator.launch(info, ["true"], {})) for info in holds]
    ns = operator.config.namespace
    try:
        for info in holds:
            name = job_name(info.run_id, info.pipeline_step_name, info.step_run_id)
            wait_until(
                f"{info.pipeline_step_name} to run",
                lambda name=name: pod_running(api_client, ns, name),
                120,
                0.5,
            )
        third = on_pool(pool, "third", 8, pending_timeout=45)
        with (
            caplog.at_level(logging.INFO, "k8s_step_operator"),
            pytest.raises(UnschedulableError) as raised,
        ):
            operator.launch(third, ["true"], {})
        message = str(raised.value)
        assert "exceed limits for nodepool (NodePool=autoscaled-h100)" in message, message
        said = [r.getMessage() for r in caplog.records if "exceed limits" in r.getMessage()]
        assert said, "the limit was not reported while waiting"
    finally:
        batch = k8s.BatchV1Api(api_client)
        for j in batch.list_namespaced_job(ns).items:
            batch.delete_namespaced_job(
                j.metadata.name, ns, body=k8s.V1DeleteOptions(propagation_policy="Background")
            )
        wait_until("the holders to end", lambda: all(h.done.is_set() for h in holders), 120, 1)
        operator.close()


def test_another_autoscalers_scale_up_is_waited_for_though_karpenter_said_no(
    make_operator: Callable[..., KubernetesJobStepOperator],
    pool: dict[str, Any],
    api_client: k8s.ApiClient,
    local_cluster: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Karpenter and another autoscaler in one cluster. Karpenter says no at once (no NodePool
    # makes a B200 node); the other one, the cluster autoscaler (its status ConfigMap in
    # kube-system, its TriggeredScaleUp on the pod), adds a node 5 s later. The step used to
    # fail at Karpenter's word, in 0.56 s.
    core = k8s.CoreV1Api(api_client)
    status = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name="cluster-autoscaler-status", namespace="kube-system"),
        data={"status": "Cluster-autoscaler status at 2026-12-05: Health: Healthy"},
    )
    core.create_namespaced_config_map("kube-system", status)
    operator = make_operator()
    ns = operator.config.namespace
    node = f"other-b200-{uuid.uuid4().hex[:6]}"
    labels = {**pool["node_selector"], "nvidia.com/gpu.product": "NVIDIA-B200"}
    info = on_pool(pool, "b200", 1, selector=labels, duration="1s", pending_timeout=300)
    name = job_name(info.run_id, "b200", info.step_run_id)
    added: list[str] = []
    try:
        with caplog.at_level(logging.INFO, "k8s_step_operator"):
            running = Launch(lambda: operator.launch(info, ["true"], {}))

            def karpenter_said_no() -> Any:
                for e in core.list_namespaced_event(ns).items:
                    if (
                        e.involved_object.name.startswith(name)
                        and e.reason == "FailedScheduling"
                        and (e.source.component or "").startswith("karpenter")
                    ):
                        return e
                return None

            refusal = wait_until("Karpenter to refuse the pod", karpenter_said_no, 60, 0.2)
            assert not running.done.is_set(), "the step ended on Karpenter's word"
            pod = refusal.involved_object
            core.create_namespaced_event(
                ns,
                k8s.CoreV1Event(
                    metadata=k8s.V1ObjectMeta(generate_name=f"{pod.name}."),
                    involved_object=k8s.V1ObjectReference(
                        kind="Pod", name=pod.name, namespace=ns, uid=pod.uid
                    ),
                    reason="TriggeredScaleUp",
                    message="pod triggered scale-up: [{b200-group 0->1 (max: 2)}]",
                    type="Normal",
                    source=k8s.V1EventSource(component="cluster-autoscaler"),
                    first_timestamp=None,
                ),
            )
            time.sleep(5)
            assert not running.done.is_set(), "the step did not wait for the scale-up"
            capacity = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"}
            taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
            spec = {"name": node, "labels": labels, "taints": [taint], "capacity": capacity}
            added = local_cluster.add_nodes([spec])
            running.result(timeout=120)
        said = [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator"]
        assert any(
            "a node is being added: the cluster autoscaler: pod triggered scale-up" in m
            for m in said
        ), said
        assert any("succeeded" in m for m in said), said
    finally:
        if added:
            local_cluster.remove_nodes(added)
        core.delete_namespaced_config_map("cluster-autoscaler-status", "kube-system")
        operator.close()


def test_a_step_fails_once_every_autoscaler_present_said_no_naming_both(
    make_operator: Callable[..., KubernetesJobStepOperator],
    pool: dict[str, Any],
    api_client: k8s.ApiClient,
) -> None:
    # The same two autoscalers; this time the other one will not add a node either. "Never" is
    # said at its word, not Karpenter's, and names both.
    core = k8s.CoreV1Api(api_client)

    def nothing_counted() -> bool:
        # Until Karpenter stops counting an earlier test's nodes against the pool's limit, it
        # says "exceed limits" (a wait may help) instead of "incompatible requirements".
        nodepool = custom(api_client).get_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", POOL
        )
        used = (nodepool.get("status") or {}).get("resources") or {}
        return all(str(v) == "0" for k, v in used.items() if k.endswith("/gpu"))

    wait_until("Karpenter to count no node against the pool's limit", nothing_counted, 120, 1)
    status = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name="cluster-autoscaler-status", namespace="kube-system"),
        data={"status": "Cluster-autoscaler status at 2026-12-05: Health: Healthy"},
    )
    core.create_namespaced_config_map("kube-system", status)
    operator = make_operator()
    ns = operator.config.namespace
    labels = {**pool["node_selector"], "nvidia.com/gpu.product": "NVIDIA-B200"}
    info = on_pool(pool, "b200no", 1, selector=labels, duration="1s", pending_timeout=300)
    name = job_name(info.run_id, "b200no", info.step_run_id)
    try:
        running = Launch(lambda: operator.launch(info, ["true"], {}))

        def karpenter_said_no() -> Any:
            for e in core.list_namespaced_event(ns).items:
                if (
                    e.involved_object.name.startswith(name)
                    and e.reason == "FailedScheduling"
                    and (e.source.component or "").startswith("karpenter")
                ):
                    return e
            return None

        refusal = wait_until("Karpenter to refuse the pod", karpenter_said_no, 60, 0.2)
        time.sleep(3)
        assert not running.done.is_set(), "the step ended on Karpenter's word alone"
        pod = refusal.involved_object
        core.create_namespaced_event(
            ns,
            k8s.CoreV1Event(
                metadata=k8s.V1ObjectMeta(generate_name=f"{pod.name}."),
                involved_object=k8s.V1ObjectReference(
                    kind="Pod", name=pod.name, namespace=ns, uid=pod.uid
                ),
                reason="NotTriggerScaleUp",
                message="pod didn't trigger scale-up: 1 node(s) didn't match Pod's node selector",
                type="Normal",
                source=k8s.V1EventSource(component="cluster-autoscaler"),
            ),
        )
        start = time.monotonic()
        with pytest.raises(UnschedulableError) as raised:
            running.result(timeout=60)
        assert time.monotonic() - start < 30
        message = str(raised.value)
        assert "neither Karpenter nor the cluster autoscaler will add one" in message, message
        assert "the cluster autoscaler: pod didn't trigger scale-up" in message, message
    finally:
        core.delete_namespaced_config_map("cluster-autoscaler-status", "kube-system")
        operator.close()
