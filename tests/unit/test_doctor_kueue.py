"""Doctor's Kueue section: Kueue's objects as the API server returns them in, the section out."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from k8s_step_operator._doctor.kueue import (
    GpuQuota,
    GpuUsage,
    build_kueue,
    format_kueue,
    pick_version,
    served_versions,
)
from k8s_step_operator._doctor.permissions import NODE_PERMISSIONS, OPERATOR_PERMISSIONS
from k8s_step_operator._doctor.report import AccessCheck, build_report, format_report

NS = "ml"
STAMP = "2026-01-01T00:00:00Z"


def api_groups(*kueue_versions: str) -> dict[str, Any]:
    """``GET /apis`` as the API server answers it."""
    groups: list[dict[str, Any]] = [
        {
            "name": "batch",
            "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"},
        }
    ]
    if kueue_versions:
        groups.append(
            {
                "name": "kueue.x-k8s.io",
                "versions": [
                    {"groupVersion": f"kueue.x-k8s.io/{v}", "version": v} for v in kueue_versions
                ],
                "preferredVersion": {
                    "groupVersion": f"kueue.x-k8s.io/{kueue_versions[0]}",
                    "version": kueue_versions[0],
                },
            }
        )
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def condition(active: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": "Active",
        "status": "True" if active else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": STAMP,
        "observedGeneration": 1,
    }


def local_queue(
    name: str = "gpu-queue", cluster_queue: str = "gpu-cluster-queue", version: str = "v1beta2"
) -> dict[str, Any]:
    """A LocalQueue with two pending and one admitted workload using 2 H100s."""
    usage = [
        {
            "name": "h100",
            "resources": [
                {"name": "cpu", "total": "8"},
                {"name": "memory", "total": "64Gi"},
                {"name": "nvidia.com/gpu", "total": "2"},
            ],
        }
    ]
    return {
        "apiVersion": f"kueue.x-k8s.io/{version}",
        "kind": "LocalQueue",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": "0b7c6f3e-1d2a-4a51-9d4e-6a0f3c2b1a90",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": STAMP,
        },
        "spec": {"clusterQueue": cluster_queue, "stopPolicy": "None"},
        "status": {
            "conditions": [condition(True, "Ready", "Can submit new workloads to localQueue")],
            "pendingWorkloads": 2,
            "reservingWorkloads": 1,
            "admittedWorkloads": 1,
            "flavorsReservation": copy.deepcopy(usage),
            "flavorsUsage": usage,
        },
    }


def cluster_queue(name: str = "gpu-cluster-queue", version: str = "v1beta2") -> dict[str, Any]:
    """A ClusterQueue with CPU/memory in one group and two GPU flavors in another."""
    cohort_key = "cohortName" if version == "v1beta2" else "cohort"
    return {
        "apiVersion": f"kueue.x-k8s.io/{version}",
        "kind": "ClusterQueue",
        "metadata": {
            "name": name,
            "uid": "5e1f2a9c-7b3d-4c8e-a1f0-2d9b8c7e6f51",
            "resourceVersion": "48190",
            "generation": 2,
            "creationTimestamp": STAMP,
        },
        "spec": {
            cohort_key: "ml-cohort",
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "stopPolicy": "None",
            "flavorFungibility": {
                "whenCanBorrow": "MayStopSearch",
                "whenCanPreempt": "TryNextFlavor",
            },
            "preemption": {
                "borrowWithinCohort": {"policy": "Never"},
                "reclaimWithinCohort": "Never",
                "withinClusterQueue": "Never",
            },
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory"],
                    "flavors": [
                        {
                            "name": "default-flavor",
                            "resources": [
                                {"name": "cpu", "nominalQuota": "96"},
                                {"name": "memory", "nominalQuota": "1Ti"},
                            ],
                        }
                    ],
                },
                {
                    "coveredResources": ["nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": "h100",
                            "resources": [
                                {
                                    "name": "nvidia.com/gpu",
                                    "nominalQuota": "16",
                                    "borrowingLimit": "8",
                                }
                            ],
                        },
                        {
                            "name": "a100",
                            "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "8"}],
                        },
                    ],
                },
            ],
        },
        "status": {
            "conditions": [condition(True, "Ready", "Can admit new workloads")],
            "pendingWorkloads": 4,
            "reservingWorkloads": 3,
            "admittedWorkloads": 3,
            "flavorsReservation": [
                {
                    "name": "default-flavor",
                    "resources": [
                        {"name": "cpu", "total": "24", "borrowed": "0"},
                        {"name": "memory", "total": "192Gi", "borrowed": "0"},
                    ],
                },
                {
                    "name": "h100",
                    "resources": [{"name": "nvidia.com/gpu", "total": "18", "borrowed": "2"}],
                },
                {
                    "name": "a100",
                    "resources": [{"name": "nvidia.com/gpu", "total": "0", "borrowed": "0"}],
                },
            ],
            "flavorsUsage": [
                {
                    "name": "default-flavor",
                    "resources": [
                        {"name": "cpu", "total": "24", "borrowed": "0"},
                        {"name": "memory", "total": "192Gi", "borrowed": "0"},
                    ],
                },
                {
                    "name": "h100",
                    "resources": [{"name": "nvidia.com/gpu", "total": "16", "borrowed": "0"}],
                },
                {
                    "name": "a100",
                    "resources": [{"name": "nvidia.com/gpu", "total": "0", "borrowed": "0"}],
                },
            ],
        },
    }


@pytest.mark.parametrize(
    ("versions", "served", "picked"),
    [
        (("v1beta2", "v1beta1"), ("v1beta2", "v1beta1"), "v1beta2"),  # Kueue v0.15-v0.17
        (("v1beta1",), ("v1beta1",), "v1beta1"),  # up to v0.14
        (("v1beta2",), ("v1beta2",), "v1beta2"),  # once v1beta1 is no longer served
        (("v1",), ("v1",), None),
        ((), None, None),
    ],
)
def test_version_from_discovery(
    versions: tuple[str, ...], served: tuple[str, ...] | None, picked: str | None
) -> None:
    assert served_versions(api_groups(*versions)) == served
    assert (pick_version(served) if served is not None else None) == picked


def test_local_queue_and_its_cluster_queue_gpu_quota() -> None:
    k = build_kueue(
        NS,
        served=("v1beta2", "v1beta1"),
        local_queues=[local_queue()],
        cluster_queues=[cluster_queue()],
    )
    assert (k.status, k.api_version, k.notes) == ("ok", "kueue.x-k8s.io/v1beta2", ())
    (lq,) = k.local_queues
    assert (lq.name, lq.cluster_queue, lq.active) == ("gpu-queue", "gpu-cluster-queue", True)
    assert (lq.pending, lq.reserving, lq.admitted) == (2, 1, 1)
    assert lq.gpu_usage == (GpuUsage("h100", "nvidia.com/gpu", "2"),)
    cq = lq.cluster_queue_state
    assert cq is not None
    assert (cq.name, cq.cohort, cq.active, cq.pending, cq.reserving, cq.admitted) == (
        "gpu-cluster-queue",
        "ml-cohort",
        True,
        4,
        3,
        3,
    )
    # CPU and memory are not GPU resources: only the GPU flavors are listed.
    assert cq.gpu_quotas == (
        GpuQuota("h100", "nvidia.com/gpu", "16", "8", reserved="18", used="16", borrowed="0"),
        GpuQuota("a100", "nvidia.com/gpu", "8", None, reserved="0", used="0", borrowed="0"),
    )
    assert format_kueue(k, NS) == [
        "Kueue (kueue.x-k8s.io/v1beta2): LocalQueues in namespace ml",
        "  gpu-queue -> ClusterQueue gpu-cluster-queue: 2 pending, 1 reserving, 1 admitted",
        "    uses h100 nvidia.com/gpu=2",
        "    ClusterQueue gpu-cluster-queue (cohort ml-cohort): 4 pending, 3 reserving, 3 admitted",
        "      h100 nvidia.com/gpu: quota 16 (borrowing limit 8), reserved 18, in use 16",
        "      a100 nvidia.com/gpu: quota 8, reserved 0, in use 0",
    ]


def test_v1beta1_objects_read_the_same() -> None:
    k = build_kueue(
        NS,
        served=("v1beta1",),
        local_queues=[local_queue(version="v1beta1")],
        cluster_queues=[cluster_queue(version="v1beta1")],
    )
    assert k.api_version == "kueue.x-k8s.io/v1beta1"
    cq = k.local_queues[0].cluster_queue_state
    assert cq is not None and cq.cohort == "ml-cohort"  # spec.cohort in v1beta1
    assert [q.nominal for q in cq.gpu_quotas] == ["16", "8"]


def test_borrowed_usage_is_shown() -> None:
    cq = cluster_queue()
    cq["status"]["flavorsUsage"][1]["resources"][0].update(total="18", borrowed="2")
    k = build_kueue(NS, served=("v1beta2",), local_queues=[local_queue()], cluster_queues=[cq])
    line = "h100 nvidia.com/gpu: quota 16 (borrowing limit 8), reserved 18, in use 18, 2 borrowed"
    assert f"      {line}" in format_kueue(k, NS)


def test_cluster_queue_without_gpu_quota_is_noted() -> None:
    cq = cluster_queue()
    cq["spec"]["resourceGroups"] = cq["spec"]["resourceGroups"][:1]
    k = build_kueue(NS, served=("v1beta2",), local_queues=[local_queue()], cluster_queues=[cq])
    assert k.notes == (
        "ClusterQueue gpu-cluster-queue has no GPU quota: GPU steps queued in LocalQueue "
        "gpu-queue are never admitted",
    )
    assert "      GPU quota: none" in format_kueue(k, NS)


def test_inactive_queues_are_noted() -> None:
    lq = local_queue()
    lq["status"]["conditions"] = [condition(False, "Stopped", "LocalQueue is stopped")]
    cq = cluster_queue()
    cq["status"]["conditions"] = [
        condition(
            False,
            "FlavorNotFound",
            "Can't admit new workloads: references missing ResourceFlavor(s): h100.",
        )
    ]
    k = build_kueue(NS, served=("v1beta2",), local_queues=[lq], cluster_queues=[cq])
    assert k.notes == (
        "LocalQueue gpu-queue is not active: LocalQueue is stopped",
        "ClusterQueue gpu-cluster-queue is not active: Can't admit new workloads: references "
        "missing ResourceFlavor(s): h100.; nothing queued in LocalQueue gpu-queue is admitted",
    )
    text = format_kueue(k, NS)
    assert text[1].startswith("  gpu-queue (not active) -> ClusterQueue gpu-cluster-queue")
    assert text[3].startswith("    ClusterQueue gpu-cluster-queue (cohort ml-cohort): not active;")


def test_missing_and_unreadable_cluster_queues() -> None:
    k = build_kueue(
        NS,
        served=("v1beta2",),
        local_queues=[local_queue("a", "gone"), local_queue("b", "secret")],
        cluster_queues=[],
        unreadable={"secret": "this identity may not get clusterqueues.kueue.x-k8s.io"},
    )
    a, b = k.local_queues
    assert (a.cluster_queue_state, a.cluster_queue_unknown) == (None, "does not exist")
    assert b.cluster_queue_unknown == (
        "not readable (this identity may not get clusterqueues.kueue.x-k8s.io)"
    )
    assert k.notes == (
        "LocalQueue a points to ClusterQueue gone, which does not exist: nothing queued there "
        "is admitted",
    )
    text = format_kueue(k, NS)
    assert "    ClusterQueue gone: does not exist" in text
    assert (
        "    ClusterQueue secret: not readable (this identity may not get "
        "clusterqueues.kueue.x-k8s.io)" in text
    )


def test_not_installed_not_readable_and_empty() -> None:
    not_installed = build_kueue(NS, served=None, local_queues=None)
    assert not_installed.status == "not installed"
    assert format_kueue(not_installed, NS) == [
        "Kueue: not installed (the API server does not serve kueue.x-k8s.io)"
    ]
    forbidden = build_kueue(
        NS,
        served=("v1beta2", "v1beta1"),
        local_queues=None,
        detail="this identity may not list localqueues.kueue.x-k8s.io in namespace ml",
    )
    assert (forbidden.status, forbidden.api_version) == ("not readable", "kueue.x-k8s.io/v1beta2")
    assert format_kueue(forbidden, NS) == [
        "Kueue: not readable (this identity may not list localqueues.kueue.x-k8s.io in "
        "namespace ml)"
    ]
    unsupported = build_kueue(NS, served=("v1",), local_queues=None)
    assert unsupported.status == "not readable"
    assert "serves v1; doctor reads v1beta2 or v1beta1" in unsupported.detail
    empty = build_kueue(NS, served=("v1beta2",), local_queues=[])
    assert format_kueue(empty, NS) == [
        "Kueue (kueue.x-k8s.io/v1beta2): no LocalQueue in namespace ml"
    ]


def test_kueue_section_in_the_report() -> None:
    cq = cluster_queue()
    cq["spec"]["resourceGroups"] = cq["spec"]["resourceGroups"][:1]
    kueue = build_kueue(NS, served=("v1beta2",), local_queues=[local_queue()], cluster_queues=[cq])
    checks = [AccessCheck(p, True) for p in (*OPERATOR_PERMISSIONS, *NODE_PERMISSIONS)]
    report = build_report(NS, checks, nodes=[], namespace_obj=None, quotas=None, kueue=kueue)
    assert report.ok  # findings about queues are notes, not failures
    assert kueue.notes[0] in report.notes
    text = format_report(report)
    assert "Kueue (kueue.x-k8s.io/v1beta2): LocalQueues in namespace ml" in text
    assert f"note: {kueue.notes[0]}" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["kueue"]["local_queues"][0]["cluster_queue"] == "gpu-cluster-queue"
    without = build_report(NS, checks, nodes=[], namespace_obj=None, quotas=None)
    assert "Kueue" not in format_report(without) and without.to_dict()["kueue"] is None
