"""Kueue in the local cluster: Jobs labelled with a queue are held, admitted and run.

Kueue runs as a process on loopback (``e2e/cluster.py``); its webhooks are registered with the
API server by URL. These tests use plain Jobs, not the library: they check that Kueue behaves
here as it does in a production cluster, and record the shapes the operator relies on
(``K8SSO_SIGNALS_DIR`` keeps them as JSON).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s

from tests.cluster.addon_support import (
    apply,
    custom,
    delete,
    events_for,
    job,
    job_condition,
    job_pods,
    record,
    served,
    without_noise,
)
from tests.conftest import load_cluster_module, unavailable, wait_until

if TYPE_CHECKING:
    from tests.cluster.conftest import InstallChart

pytestmark = pytest.mark.cluster

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
RUN_DURATION = "sim.k8s-step-operator.io/run-duration"


@pytest.fixture(scope="module")
def kueue(api_client: k8s.ApiClient) -> None:
    """Kueue serves its API and its Job webhook answers; otherwise skip (fail in CI)."""
    if not served(api_client, f"{GROUP}/{VERSION}"):
        unavailable(
            "Kueue is not installed in this cluster (kueue.x-k8s.io/v1beta2 not served): "
            "`make binaries` builds it and `make cluster` starts it"
        )
    hooks = k8s.AdmissionregistrationV1Api(api_client).list_mutating_webhook_configuration()
    if not any(w.name == "mjob.kb.io" for h in hooks.items for w in h.webhooks or []):
        unavailable("Kueue's Job webhook is not registered (is the kueue process running?)")


@pytest.fixture
def queues(
    api_client: k8s.ApiClient, namespace: str, kueue: None
) -> Iterator[list[dict[str, Any]]]:
    """A ResourceFlavor for the H100 pool, a ClusterQueue with 8 GPUs, LocalQueue ``gpu``."""
    objs = load_cluster_module().kueue_queues(
        namespace, pool="h100", cluster_queue=f"{namespace}-gpu", preemption=PREEMPTION
    )
    # Flavors are cluster-wide: one per test, so that tests do not share (or delete) them.
    flavor = f"{namespace}-h100"
    objs[0]["metadata"]["name"] = flavor
    objs[1]["spec"]["resourceGroups"][0]["flavors"][0]["name"] = flavor
    for obj in objs:
        apply(api_client, obj)
    wait_until("the ClusterQueue to be active", lambda: cq_active(api_client, f"{namespace}-gpu"))
    yield objs
    for obj in reversed(objs):
        delete(api_client, obj)


PREEMPTION = {"withinClusterQueue": "LowerPriority"}


def cq_active(api_client: k8s.ApiClient, name: str) -> bool:
    cq = custom(api_client).get_cluster_custom_object(GROUP, VERSION, "clusterqueues", name)
    return any(
        c["type"] == "Active" and c["status"] == "True"
        for c in cq.get("status", {}).get("conditions") or []
    )


def workload_of(api_client: k8s.ApiClient, namespace: str, job_uid: str) -> dict[str, Any] | None:
    """A Job's Workload: the one labelled ``kueue.x-k8s.io/job-uid=<uid>``."""
    items = custom(api_client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloads", label_selector=f"kueue.x-k8s.io/job-uid={job_uid}"
    )["items"]
    return items[0] if items else None


def condition(obj: dict[str, Any] | None, kind: str, status: str = "True") -> dict[str, Any] | None:
    for c in (obj or {}).get("status", {}).get("conditions") or []:
        if c["type"] == kind and c["status"] == status:
            return dict(c)
    return None


def create_job(api_client: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    return k8s.BatchV1Api(api_client).create_namespaced_job(namespace, body)


def test_queued_job_is_held_admitted_and_runs(
    api_client: k8s.ApiClient, namespace: str, queues: list[dict[str, Any]], gpu_pool: Any
) -> None:
    created = create_job(api_client, namespace, job("train", gpus=2, labels={QUEUE_LABEL: "gpu"}))
    # Created unsuspended; Kueue's webhook suspended it before it was stored.
    assert created.spec.suspend is True
    wl = wait_until(
        "the Job's Workload to be admitted",
        lambda: (
            condition(w := workload_of(api_client, namespace, created.metadata.uid), "Admitted")
            and w
        ),
        30,
    )
    owner = wl["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "train", created.metadata.uid)
    assert wl["metadata"]["name"].startswith("job-train-")
    assert wl["spec"]["queueName"] == "gpu"
    assert condition(wl, "QuotaReserved") is not None
    (ps,) = wl["status"]["admission"]["podSetAssignments"]
    assert ps["flavors"] == {"nvidia.com/gpu": f"{namespace}-h100"}
    assert ps["resourceUsage"]["nvidia.com/gpu"] == "2"

    wait_until(
        "Job Complete", lambda: job_condition(api_client, namespace, "train", "Complete"), 60
    )
    j = k8s.BatchV1Api(api_client).read_namespaced_job("train", namespace)
    assert j.spec.suspend is False
    # Kueue put the flavor's node labels and tolerations on the pod template when it admitted.
    for k, v in gpu_pool.node_selector.items():
        assert j.spec.template.spec.node_selector[k] == v
    (pod,) = job_pods(api_client, namespace, "train")
    assert pod.spec.node_name in gpu_pool.nodes
    done = wait_until(
        "the Workload to be Finished",
        lambda: (
            condition(w := workload_of(api_client, namespace, created.metadata.uid), "Finished")
            and w
        ),
        30,
    )
    record("kueue-workload-admitted", without_noise(wl))
    record("kueue-workload-finished", without_noise(done))
    record("kueue-job-after-admission", without_noise(api_client.sanitize_for_serialization(j)))
    record("kueue-job-events", events_for(api_client, namespace, "Job", "train"))
    record(
        "kueue-workload-events",
        events_for(api_client, namespace, "Workload", wl["metadata"]["name"]),
    )


def test_job_without_its_local_queue_stays_suspended(
    api_client: k8s.ApiClient, namespace: str, kueue: None
) -> None:
    created = create_job(api_client, namespace, job("orphan", labels={QUEUE_LABEL: "missing"}))
    assert created.spec.suspend is True
    wl = wait_until(
        "the Workload to say why it waits",
        lambda: (
            condition(
                w := workload_of(api_client, namespace, created.metadata.uid),
                "QuotaReserved",
                "False",
            )
            and w
        ),
        30,
    )
    cond = condition(wl, "QuotaReserved", "False")
    assert cond is not None
    assert cond["reason"] == "Inadmissible"
    assert cond["message"] == "LocalQueue missing doesn't exist"
    time.sleep(2)
    j = k8s.BatchV1Api(api_client).read_namespaced_job("orphan", namespace)
    assert j.spec.suspend is True
    assert job_pods(api_client, namespace, "orphan") == []
    record("kueue-workload-localqueue-missing", without_noise(wl))
    record("kueue-job-localqueue-missing", without_noise(api_client.sanitize_for_serialization(j)))


def test_over_quota_waits_with_the_reason_and_runs_when_quota_frees(
    api_client: k8s.ApiClient, namespace: str, queues: list[dict[str, Any]]
) -> None:
    first = create_job(
        api_client,
        namespace,
        job("holder", gpus=8, labels={QUEUE_LABEL: "gpu"}, annotations={RUN_DURATION: "6s"}),
    )
    wait_until(
        "the first Workload admitted",
        lambda: condition(workload_of(api_client, namespace, first.metadata.uid), "Admitted"),
    )
    second = create_job(api_client, namespace, job("waiter", gpus=2, labels={QUEUE_LABEL: "gpu"}))
    wl = wait_until(
        "the second Workload to wait for quota",
        lambda: (
            condition(
                w := workload_of(api_client, namespace, second.metadata.uid),
                "QuotaReserved",
                "False",
            )
            and w
        ),
        30,
    )
    cond = condition(wl, "QuotaReserved", "False")
    assert cond is not None and cond["reason"] == "Pending"
    assert "insufficient unused quota for nvidia.com/gpu in flavor" in cond["message"]
    assert "2 more needed" in cond["message"]
    record("kueue-workload-insufficient-quota", without_noise(wl))
    # The LocalQueue's counts follow a moment later (Kueue batches status updates).
    lq = wait_until(
        "the LocalQueue to count the waiting Workload",
        lambda: (
            (
                q := custom(api_client).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "localqueues", "gpu"
                )
            )["status"].get("pendingWorkloads")
            == 1
            and q
        ),
        30,
    )
    record("kueue-localqueue-with-pending", without_noise(lq))
    wait_until(
        "the waiter to run", lambda: job_condition(api_client, namespace, "waiter", "Complete"), 60
    )


def test_queue_positions_from_the_visibility_api(
    api_client: k8s.ApiClient,
    namespace: str,
    queues: list[dict[str, Any]],
    local_cluster: Any,
) -> None:
    """Kueue's visibility server lists pending Workloads with their positions (local cluster
    only: it is asked on its loopback port, there being no Service for an APIService)."""
    mod = load_cluster_module()
    create_job(
        api_client,
        namespace,
        job("holder", gpus=8, labels={QUEUE_LABEL: "gpu"}, annotations={RUN_DURATION: "30s"}),
    )
    wait_until("the holder to run", lambda: job_pods(api_client, namespace, "holder"))
    for name, gpus in (("second", 4), ("third", 2)):
        create_job(api_client, namespace, job(name, gpus=gpus, labels={QUEUE_LABEL: "gpu"}))
        time.sleep(1.1)  # creation timestamps order the queue (to the second)

    def pending() -> dict[str, Any] | None:
        got: dict[str, Any] = mod.kueue_pending_workloads(
            local_cluster.state, namespace=namespace, local_queue="gpu"
        )
        return got if len(got["items"]) == 2 else None

    summary = wait_until("two pending Workloads", pending, 30)
    assert summary["kind"] == "PendingWorkloadsSummary"
    order = [
        (w["metadata"]["ownerReferences"][0]["name"], w["positionInLocalQueue"])
        for w in summary["items"]
    ]
    assert order == [("second", 0), ("third", 1)]
    by_cq = mod.kueue_pending_workloads(local_cluster.state, cluster_queue=f"{namespace}-gpu")
    assert [w["positionInClusterQueue"] for w in by_cq["items"]] == [0, 1]
    record("kueue-visibility-pendingworkloads", summary)


def test_a_higher_priority_job_preempts_a_lower_one(
    api_client: k8s.ApiClient, namespace: str, queues: list[dict[str, Any]]
) -> None:
    mod = load_cluster_module()
    low_pc = mod.addons.workload_priority_class(f"{namespace}-low", 100, "test: low")
    high_pc = mod.addons.workload_priority_class(f"{namespace}-high", 1000, "test: high")
    for pc in (low_pc, high_pc):
        apply(api_client, pc)
    try:
        low = create_job(
            api_client,
            namespace,
            job(
                "low",
                gpus=8,
                labels={QUEUE_LABEL: "gpu", PRIORITY_LABEL: f"{namespace}-low"},
                # Long enough to be preempted mid-run, short enough to complete once re-admitted.
                annotations={RUN_DURATION: "30s"},
            ),
        )
        wait_until(
            "the low-priority pod to run",
            lambda: any(
                p.status.phase == "Running" for p in job_pods(api_client, namespace, "low")
            ),
            30,
        )
        create_job(
            api_client,
            namespace,
            job("high", gpus=8, labels={QUEUE_LABEL: "gpu", PRIORITY_LABEL: f"{namespace}-high"}),
        )
        wl = wait_until(
            "the low Workload to be evicted",
            lambda: (
                condition(w := workload_of(api_client, namespace, low.metadata.uid), "Evicted")
                and w
            ),
            30,
        )
        evicted = condition(wl, "Evicted")
        preempted = condition(wl, "Preempted")
        assert evicted is not None and evicted["reason"] == "Preempted"
        assert preempted is not None and preempted["reason"] == "InClusterQueue"
        assert wl["spec"]["priority"] == 100
        assert wl["spec"]["priorityClassRef"]["name"] == f"{namespace}-low"
        wait_until(
            "the high-priority Job to complete",
            lambda: job_condition(api_client, namespace, "high", "Complete"),
            60,
        )
        # What must hold, whatever the timing: the preempted Job was suspended at some point (its
        # Suspended condition stays, False once resumed), Kueue re-admitted it, and it completed.
        # Whether it is still suspended when the high one completes depends on how fast Kueue
        # re-admits it, so that is not asserted.
        j = k8s.BatchV1Api(api_client).read_namespaced_job("low", namespace)
        suspended = [c for c in j.status.conditions or [] if c.type == "Suspended"]
        assert suspended, f"the preempted Job was never suspended: {j.status.conditions}"
        wait_until(
            "the preempted Job to be re-admitted and complete",
            lambda: job_condition(api_client, namespace, "low", "Complete"),
            120,
        )
        readmitted = workload_of(api_client, namespace, low.metadata.uid)
        assert readmitted is not None
        assert condition(readmitted, "Finished") is not None
        again = workload_of(api_client, namespace, low.metadata.uid)
        record("kueue-workload-preempted", without_noise(wl))
        record("kueue-workload-preempted-later", without_noise(again or {}))
        record("kueue-job-preempted", without_noise(api_client.sanitize_for_serialization(j)))
        record("kueue-job-preempted-events", events_for(api_client, namespace, "Job", "low"))
        record(
            "kueue-workload-preempted-events",
            events_for(api_client, namespace, "Workload", wl["metadata"]["name"]),
        )
        record("kueue-workloadpriorityclass", without_noise(apply(api_client, low_pc)))
    finally:
        for pc in (low_pc, high_pc):
            delete(api_client, pc)


def test_inactive_cluster_queue_holds_jobs_with_the_reason(
    api_client: k8s.ApiClient, namespace: str, kueue: None
) -> None:
    objs = load_cluster_module().kueue_queues(
        namespace, pool="h100", cluster_queue=f"{namespace}-gpu"
    )
    # Only the ClusterQueue and the LocalQueue: the flavor it names does not exist.
    objs[1]["spec"]["resourceGroups"][0]["flavors"][0]["name"] = f"{namespace}-absent"
    try:
        for obj in objs[1:]:
            apply(api_client, obj)
        created = create_job(api_client, namespace, job("stuck", labels={QUEUE_LABEL: "gpu"}))
        wl = wait_until(
            "the Workload to say why it waits",
            lambda: (
                condition(
                    w := workload_of(api_client, namespace, created.metadata.uid),
                    "QuotaReserved",
                    "False",
                )
                and w
            ),
            30,
        )
        cond = condition(wl, "QuotaReserved", "False")
        assert cond is not None and cond["reason"] == "Inadmissible"
        assert cond["message"] == f"ClusterQueue {namespace}-gpu is inactive"
        cq = custom(api_client).get_cluster_custom_object(
            GROUP, VERSION, "clusterqueues", f"{namespace}-gpu"
        )
        record("kueue-workload-clusterqueue-inactive", without_noise(wl))
        record("kueue-clusterqueue-inactive", without_noise(cq))
    finally:
        for obj in reversed(objs[1:]):
            delete(api_client, obj)


@pytest.mark.parametrize("api_version", ["v1beta1", "v1beta2"])
def test_chart_queues_admit_and_run_a_job(
    install_chart: InstallChart,
    api_client: k8s.ApiClient,
    namespace: str,
    gpu_pool: Any,
    kueue: None,
    api_version: str,
) -> None:
    """``helm install --set kueue.enabled=true,kueue.createQueues=true``: a queued Job runs.

    The Job is created by the pipeline's ServiceAccount (the chart's least privilege), which
    may also read the Workload Kueue made for it.
    """
    sa = install_chart(
        namespace,
        values={
            "kueue": {
                "enabled": True,
                "createQueues": True,
                "apiVersion": api_version,
                "resourceFlavor": {
                    "nodeLabels": dict(gpu_pool.node_selector),
                    "tolerations": [dict(t) for t in gpu_pool.tolerations],
                },
            }
        },
        suffix=api_version,
    )
    name = f"step-{uuid.uuid4().hex[:6]}"
    created = k8s.BatchV1Api(sa.api_client).create_namespaced_job(
        namespace, job(name, gpus=1, labels={QUEUE_LABEL: "gpu"})
    )
    assert created.spec.suspend is True
    wait_until(
        "the Job to complete", lambda: job_condition(api_client, namespace, name, "Complete"), 60
    )
    (pod,) = job_pods(api_client, namespace, name)
    assert pod.spec.node_name in gpu_pool.nodes
    wl = wait_until(
        "the Workload, read as the pipeline",
        lambda: custom(sa.api_client).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "workloads"
        )["items"],
    )
    assert wl[0]["status"]["admission"]["clusterQueue"].endswith("-gpu")
