"""Karpenter in the local cluster: GPU pools that grow from zero, and what it says when it can't.

Karpenter's KWOK provider runs on loopback (``e2e/cluster.py``) with the NodePools of
``e2e/karpenter/nodepools.yaml``; the nodes it adds are played by our KWOK like the static ones.
These tests use plain Jobs, not the library, and record the events Karpenter writes
(``K8SSO_SIGNALS_DIR`` keeps them as JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.cluster.addon_support import (
    custom,
    events_for,
    job,
    job_condition,
    job_pods,
    record,
    served,
    without_noise,
)
from tests.conftest import load_cluster_module, unavailable, wait_until

pytestmark = pytest.mark.cluster

RUN_DURATION = "sim.k8s-step-operator.io/run-duration"
POOL = "autoscaled-h100"
POOL_LABEL = "k8s-step-operator.io/pool"
NODEPOOL_LABEL = "karpenter.sh/nodepool"


@pytest.fixture(scope="module")
def pools(api_client: k8s.ApiClient) -> Iterator[dict[str, dict[str, Any]]]:
    """The autoscaled pools; at the end, wait for Karpenter to take their nodes away again."""
    if not served(api_client, "karpenter.sh/v1"):
        unavailable(
            "Karpenter is not installed in this cluster (karpenter.sh/v1 not served): "
            "`make binaries` builds it and `make cluster` starts it"
        )
    try:
        custom(api_client).get_cluster_custom_object("karpenter.sh", "v1", "nodepools", POOL)
    except k8s.ApiException as e:
        if e.status != 404:
            raise
        unavailable(f"NodePool {POOL} is missing (e2e/karpenter/nodepools.yaml)")
    autoscaled = load_cluster_module().autoscaled_pools()
    yield autoscaled
    # Empty nodes go 30 s after their last pod (consolidateAfter); leave the pools as found.
    wait_until(
        "Karpenter to remove the nodes it added",
        lambda: not pool_nodes(api_client, POOL) and not nodeclaims(api_client),
        150,
        1,
    )


def pool_nodes(api_client: k8s.ApiClient, pool: str) -> list[Any]:
    return list(k8s.CoreV1Api(api_client).list_node(label_selector=f"{POOL_LABEL}={pool}").items)


def nodeclaims(api_client: k8s.ApiClient, pool: str = POOL) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom(api_client).list_cluster_custom_object(
        "karpenter.sh", "v1", "nodeclaims", label_selector=f"{NODEPOOL_LABEL}={pool}"
    )["items"]
    return items


def placement(pool: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeSelector": dict(pool["node_selector"]),
        "tolerations": [dict(t) for t in pool["tolerations"]],
    }


def karpenter_events(api_client: k8s.ApiClient, namespace: str, pod: str) -> list[dict[str, Any]]:
    return [e for e in events_for(api_client, namespace, "Pod", pod) if e["source"] == "karpenter"]


def only_pod(api_client: k8s.ApiClient, namespace: str, job_name: str) -> Any:
    return wait_until(f"the pod of {job_name}", lambda: job_pods(api_client, namespace, job_name))[
        0
    ]


# The tests that expect no node come first: a node added by a later test stays 30 s, and
# Karpenter's reasons depend on what exists (a pool at its limit reports the limit first).


def test_pods_for_static_pools_never_make_karpenter_add_nodes(
    api_client: k8s.ApiClient, namespace: str, pools: dict[str, dict[str, Any]], gpu_pool: Any
) -> None:
    # What tests of the static pools rely on: a request no node fits stays unschedulable, and
    # Karpenter (which sees the pod) finds no NodePool for it.
    k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace,
        job("static", gpus=gpu_pool.per_node + 1, placement=gpu_pool.placement()),
    )
    pod = only_pod(api_client, namespace, "static")
    (event, *_) = wait_until(
        "Karpenter's event",
        lambda: karpenter_events(api_client, namespace, pod.metadata.name),
        60,
    )
    record("karpenter-event-static-pool", event)
    assert event["message"].startswith("Failed to schedule pod, ")
    assert (
        "did not tolerate taint (taint=k8s-step-operator.io/autoscaled=autoscaled-l4:NoSchedule)"
    ) in event["message"]
    for name in (POOL, "autoscaled-l4"):
        assert nodeclaims(api_client, name) == []
    p = k8s.CoreV1Api(api_client).read_namespaced_pod(pod.metadata.name, namespace)
    assert not p.spec.node_name
    cond = next(c for c in p.status.conditions if c.type == "PodScheduled")
    assert cond.reason == "Unschedulable"
    assert f"Insufficient {gpu_pool.resource}" in cond.message


def test_no_nodepool_allows_the_instance_type(
    api_client: k8s.ApiClient, namespace: str, pools: dict[str, dict[str, Any]]
) -> None:
    pool = pools[POOL]
    batch = k8s.BatchV1Api(api_client)
    # An instance type Karpenter knows but that no NodePool lets it launch.
    b200 = {
        "nodeSelector": {"node.kubernetes.io/instance-type": "gpu-b200x8"},
        "tolerations": [dict(t) for t in pool["tolerations"]],
    }
    batch.create_namespaced_job(namespace, job("b200", gpus=8, placement=b200))
    # The pool allows H100 x8 only: nine GPUs fit no instance type it may launch.
    batch.create_namespaced_job(namespace, job("nine", gpus=9, placement=placement(pool)))
    events = {}
    for name in ("b200", "nine"):
        pod = only_pod(api_client, namespace, name)
        (event, *_) = wait_until(
            f"Karpenter's event on {name}",
            lambda pod=pod: karpenter_events(api_client, namespace, pod.metadata.name),
            60,
        )
        record(f"karpenter-event-{name}", event)
        assert event["reason"] == "FailedScheduling"
        assert event["type"] == "Warning"
        assert event["message"].startswith("Failed to schedule pod, ")
        events[name] = event
    # One reason per NodePool, joined with "; ".
    assert (
        "incompatible requirements, key node.kubernetes.io/instance-type, "
        "node.kubernetes.io/instance-type In [gpu-b200x8] not in "
        "node.kubernetes.io/instance-type In [gpu-h100x8]"
    ) in events["b200"]["message"]
    assert "no instance type has enough resources" in events["nine"]["message"]
    assert '"nvidia.com/gpu":"9"' in events["nine"]["message"]
    assert nodeclaims(api_client) == []


def test_a_pod_for_the_empty_pool_gets_a_node_and_runs(
    api_client: k8s.ApiClient, namespace: str, pools: dict[str, dict[str, Any]]
) -> None:
    pool = pools[POOL]
    k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace, job("grow", gpus=8, placement=placement(pool))
    )
    claim = wait_until("a NodeClaim of the pool", lambda: nodeclaims(api_client), 30)[0]
    assert claim["spec"]["nodeClassRef"]["kind"] == "KWOKNodeClass"
    wait_until(
        "the Job to complete", lambda: job_condition(api_client, namespace, "grow", "Complete"), 90
    )
    (pod,) = job_pods(api_client, namespace, "grow")
    node = k8s.CoreV1Api(api_client).read_node(pod.spec.node_name)
    labels = node.metadata.labels
    assert labels[POOL_LABEL] == POOL
    assert labels[NODEPOOL_LABEL] == POOL
    assert labels["node.kubernetes.io/instance-type"] == "gpu-h100x8"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    assert {(t.key, t.effect) for t in node.spec.taints or []} >= {
        ("nvidia.com/gpu", "NoSchedule"),
        ("k8s-step-operator.io/autoscaled", "NoSchedule"),
    }
    claims = nodeclaims(api_client)
    record("karpenter-nodeclaim", without_noise(claims[0]) if claims else {})
    record("karpenter-node", without_noise(api_client.sanitize_for_serialization(node)))
    record(
        "karpenter-pod-events-provisioned",
        events_for(api_client, namespace, "Pod", pod.metadata.name),
    )


def test_the_nodepool_limit_holds_a_pod_back_until_a_node_frees(
    api_client: k8s.ApiClient, namespace: str, pools: dict[str, dict[str, Any]]
) -> None:
    pool = pools[POOL]
    batch = k8s.BatchV1Api(api_client)
    # 16 GPUs of limit: two 8-GPU nodes at most, so the third pod waits.
    names = [f"fill-{i}" for i in range(3)]
    for n in names:
        batch.create_namespaced_job(
            namespace,
            job(n, gpus=8, placement=placement(pool), annotations={RUN_DURATION: "15s"}),
        )

    def limit_event() -> tuple[str, dict[str, Any]] | None:
        for n in names:
            for p in job_pods(api_client, namespace, n):
                for e in karpenter_events(api_client, namespace, p.metadata.name):
                    if "exceed limits for nodepool" in (e["message"] or ""):
                        return p.metadata.name, e
        return None

    _pod, event = wait_until("Karpenter's limit event on the third pod", limit_event, 60)
    np = custom(api_client).get_cluster_custom_object("karpenter.sh", "v1", "nodepools", POOL)
    record("karpenter-event-limit", event)
    record("karpenter-nodepool-at-limit", without_noise(np))
    assert event["reason"] == "FailedScheduling"
    assert event["message"].startswith("Failed to schedule pod, ")
    assert "all available instance types exceed limits for nodepool" in event["message"]
    assert f"(NodePool={POOL})" in event["message"]
    assert len(nodeclaims(api_client)) <= 2
    for n in names:
        wait_until(
            f"{n} to complete", lambda n=n: job_condition(api_client, namespace, n, "Complete"), 120
        )
    assert len(nodeclaims(api_client)) <= 2


def test_the_autoscaled_pool_is_described_for_tests(pools: dict[str, dict[str, Any]]) -> None:
    pool = pools[POOL]
    assert pool["autoscaler"]["nodepool"] == POOL
    its = load_cluster_module().addons.instance_types()
    assert its[pool["autoscaler"]["instance_type"]]["resources"]["nvidia.com/gpu"] == str(
        pool["per_node"]
    )
