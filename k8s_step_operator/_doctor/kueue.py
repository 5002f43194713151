"""Kueue as doctor reports it: the namespace's LocalQueues, and their ClusterQueues' GPU quota.

A GPU step with ``queue_name`` waits, suspended, until Kueue admits it; it is admitted only if the
LocalQueue's ClusterQueue has a quota for the step's GPU resource and enough of it is free. So
doctor shows, per LocalQueue of the namespace: its ClusterQueue, its pending and admitted
workloads, and the ClusterQueue's nominal GPU quota per flavor next to what is reserved and used.

Pure: Kueue's objects as API JSON in, frozen dataclasses out. Kueue v0.15 added the API version
v1beta2, v0.16 made it the storage version, and v0.17 serves both (v1beta1 deprecated). The fields
read here have the same shape in both: LocalQueue ``spec.clusterQueue`` and ``status``
(``pendingWorkloads``, ``reservingWorkloads``, ``admittedWorkloads``, ``flavorsUsage``);
ClusterQueue ``spec.resourceGroups[].flavors[].resources[]`` (``nominalQuota``,
``borrowingLimit``) and ``status.flavorsReservation`` / ``status.flavorsUsage``. Only the cohort
moved: ``spec.cohortName`` in v1beta2, ``spec.cohort`` in v1beta1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from k8s_step_operator._doctor.gpus import is_gpu_resource
from k8s_step_operator._objects import (
    APIGroupList,
    ClusterQueue,
    FlavorUsage,
    LocalQueue,
    ResourceUsage,
    conditions_of,
    name_of,
)

__all__ = [
    "KUEUE_GROUP",
    "KUEUE_VERSIONS",
    "ClusterQueueState",
    "GpuQuota",
    "GpuUsage",
    "KueueReport",
    "LocalQueueState",
    "build_kueue",
    "format_kueue",
    "pick_version",
    "served_versions",
]

KUEUE_GROUP = "kueue.x-k8s.io"
# The versions doctor reads, preferred first.
KUEUE_VERSIONS = ("v1beta2", "v1beta1")

KueueStatus = Literal["ok", "not installed", "not readable"]


@dataclass(frozen=True)
class GpuUsage:
    """How much of one GPU resource of one flavor a LocalQueue's admitted workloads use."""

    flavor: str
    resource: str
    total: str


@dataclass(frozen=True)
class GpuQuota:
    """One GPU resource of one flavor of a ClusterQueue.

    Attributes:
        flavor: The ResourceFlavor.
        resource: The resource name, e.g. ``nvidia.com/gpu``.
        nominal: ``nominalQuota``.
        borrowing_limit: ``borrowingLimit``, or ``None`` when unset (no limit within the cohort).
        reserved: Quota reserved by workloads (``status.flavorsReservation``).
        used: Quota used by admitted workloads (``status.flavorsUsage``).
        borrowed: Of ``used``, what is borrowed from the cohort.
    """

    flavor: str
    resource: str
    nominal: str
    borrowing_limit: str | None
    reserved: str
    used: str
    borrowed: str


@dataclass(frozen=True)
class ClusterQueueState:
    """A ClusterQueue: whether it admits, its workload counts and its GPU quota.

    Attributes:
        name: The ClusterQueue.
        cohort: Its cohort, or ``""``.
        active: Its ``Active`` condition (``None`` when it reports none).
        message: The condition's message when it is not active.
        pending: Workloads waiting for quota.
        reserving: Workloads holding a quota reservation.
        admitted: Workloads admitted.
        gpu_quotas: One entry per flavor and GPU resource of its resource groups.
    """

    name: str
    cohort: str
    active: bool | None
    message: str
    pending: int
    reserving: int
    admitted: int
    gpu_quotas: tuple[GpuQuota, ...]


@dataclass(frozen=True)
class LocalQueueState:
    """A LocalQueue of the namespace and, when it could be read, its ClusterQueue.

    Attributes:
        name: The LocalQueue (what ``queue_name`` names).
        cluster_queue: The ClusterQueue it submits to.
        active: Its ``Active`` condition (``None`` when it reports none).
        message: The condition's message when it is not active.
        pending: Its workloads waiting for quota.
        reserving: Its workloads holding a quota reservation.
        admitted: Its workloads admitted.
        gpu_usage: GPUs its admitted workloads use, per flavor.
        cluster_queue_state: The ClusterQueue, or ``None`` (see ``cluster_queue_unknown``).
        cluster_queue_unknown: Why the ClusterQueue is not shown: ``not readable (...)`` or
            ``does not exist``; ``""`` when it is.
    """

    name: str
    cluster_queue: str
    active: bool | None
    message: str
    pending: int
    reserving: int
    admitted: int
    gpu_usage: tuple[GpuUsage, ...]
    cluster_queue_state: ClusterQueueState | None
    cluster_queue_unknown: str = ""


@dataclass(frozen=True)
class KueueReport:
    """What doctor found of Kueue in a namespace.

    Attributes:
        status: ``ok``; ``not installed`` (the API server does not serve kueue.x-k8s.io); or
            ``not readable`` (this identity may not list LocalQueues, or no version doctor
            reads is served).
        api_version: The group/version read, e.g. ``kueue.x-k8s.io/v1beta2``, or ``""``.
        local_queues: The namespace's LocalQueues, by name.
        detail: Why the status is not ``ok``.
        notes: Findings: a ClusterQueue without GPU quota, an inactive or missing queue.
    """

    status: KueueStatus
    api_version: str
    local_queues: tuple[LocalQueueState, ...] = ()
    detail: str = ""
    notes: tuple[str, ...] = ()


def served_versions(api_groups: APIGroupList) -> tuple[str, ...] | None:
    """The versions of kueue.x-k8s.io in an APIGroupList (``GET /apis``); ``None``: not served."""
    for group in api_groups.get("groups") or ():
        if group.get("name") == KUEUE_GROUP:
            return tuple(str(v.get("version", "")) for v in group.get("versions") or ())
    return None


def pick_version(served: Sequence[str]) -> str | None:
    """The version to read: v1beta2 when served, else v1beta1; ``None`` when neither is."""
    return next((v for v in KUEUE_VERSIONS if v in served), None)


def _int(value: int | None) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _active(obj: LocalQueue | ClusterQueue) -> tuple[bool | None, str]:
    for cond in conditions_of(obj):
        if cond.get("type") == "Active":
            active = cond.get("status") == "True"
            text = str(cond.get("message") or cond.get("reason") or "")
            return active, "" if active else text
    return None, ""


def _usage_totals(
    flavors: Sequence[FlavorUsage] | None,
) -> dict[tuple[str, str], ResourceUsage]:
    """``status.flavorsUsage`` or ``flavorsReservation`` as (flavor, resource) -> the entry."""
    totals: dict[tuple[str, str], ResourceUsage] = {}
    for flavor in flavors or ():
        for res in flavor.get("resources") or ():
            totals[(str(flavor.get("name", "")), str(res.get("name", "")))] = res
    return totals


def _cluster_queue(obj: ClusterQueue) -> ClusterQueueState:
    spec = obj.get("spec", {})
    status = obj.get("status", {})
    reserved = _usage_totals(status.get("flavorsReservation"))
    used = _usage_totals(status.get("flavorsUsage"))
    quotas = []
    for group in spec.get("resourceGroups") or ():
        for flavor in group.get("flavors") or ():
            name = str(flavor.get("name", ""))
            for res in flavor.get("resources") or ():
                resource = str(res.get("name", ""))
                if not is_gpu_resource(resource):
                    continue
                key = (name, resource)
                limit = res.get("borrowingLimit")
                quotas.append(
                    GpuQuota(
                        flavor=name,
                        resource=resource,
                        nominal=str(res.get("nominalQuota", "0")),
                        borrowing_limit=None if limit is None else str(limit),
                        reserved=str(reserved.get(key, {}).get("total", "0")),
                        used=str(used.get(key, {}).get("total", "0")),
                        borrowed=str(used.get(key, {}).get("borrowed", "0")),
                    )
                )
    active, message = _active(obj)
    return ClusterQueueState(
        name=name_of(obj),
        cohort=str(spec.get("cohortName") or spec.get("cohort") or ""),
        active=active,
        message=message,
        pending=_int(status.get("pendingWorkloads")),
        reserving=_int(status.get("reservingWorkloads")),
        admitted=_int(status.get("admittedWorkloads")),
        gpu_quotas=tuple(quotas),
    )


def _local_queue(
    obj: LocalQueue,
    cluster_queues: Mapping[str, ClusterQueueState],
    unreadable: Mapping[str, str],
) -> LocalQueueState:
    status = obj.get("status", {})
    cq = str(obj.get("spec", {}).get("clusterQueue", ""))
    usage = tuple(
        GpuUsage(flavor, resource, str(entry.get("total", "0")))
        for (flavor, resource), entry in _usage_totals(status.get("flavorsUsage")).items()
        if is_gpu_resource(resource)
    )
    active, message = _active(obj)
    state = cluster_queues.get(cq)
    if state is not None:
        unknown = ""
    elif cq in unreadable:
        unknown = f"not readable ({unreadable[cq]})"
    else:
        unknown = "does not exist"
    return LocalQueueState(
        name=name_of(obj),
        cluster_queue=cq,
        active=active,
        message=message,
        pending=_int(status.get("pendingWorkloads")),
        reserving=_int(status.get("reservingWorkloads")),
        admitted=_int(status.get("admittedWorkloads")),
        gpu_usage=usage,
        cluster_queue_state=state,
        cluster_queue_unknown=unknown,
    )


def _notes(queues: Sequence[LocalQueueState]) -> list[str]:
    notes = []
    for lq in queues:
        if lq.active is False:
            notes.append(f"LocalQueue {lq.name} is not active: {lq.message or 'no reason given'}")
        cq = lq.cluster_queue_state
        if lq.cluster_queue_unknown == "does not exist":
            notes.append(
                f"LocalQueue {lq.name} points to ClusterQueue {lq.cluster_queue}, which does not "
                "exist: nothing queued there is admitted"
            )
        elif cq is not None and cq.active is False:
            notes.append(
                f"ClusterQueue {cq.name} is not active: {cq.message or 'no reason given'}; "
                f"nothing queued in LocalQueue {lq.name} is admitted"
            )
        elif cq is not None and not cq.gpu_quotas:
            notes.append(
                f"ClusterQueue {cq.name} has no GPU quota: GPU steps queued in LocalQueue "
                f"{lq.name} are never admitted"
            )
    return notes


def build_kueue(
    namespace: str,
    *,
    served: Sequence[str] | None,
    local_queues: Sequence[LocalQueue] | None,
    cluster_queues: Sequence[ClusterQueue] = (),
    unreadable: Mapping[str, str] | None = None,
    detail: str = "",
) -> KueueReport:
    """Turn Kueue's objects into the report's Kueue section. Pure: no I/O.

    Args:
        namespace: The namespace checked.
        served: The versions of kueue.x-k8s.io the API server serves (``served_versions``), or
            ``None`` when it serves none.
        local_queues: The namespace's LocalQueues as API JSON, or ``None`` when they could not
            be listed (``detail`` says why).
        cluster_queues: The ClusterQueues the LocalQueues point to, as API JSON, those read.
        unreadable: ClusterQueue name -> why it could not be read.
        detail: Why the LocalQueues could not be listed.

    Returns:
        The Kueue section.
    """
    if served is None:
        return KueueReport(
            "not installed", "", detail=detail or f"the API server does not serve {KUEUE_GROUP}"
        )
    version = pick_version(served)
    if version is None:
        return KueueReport(
            "not readable",
            "",
            detail=f"{KUEUE_GROUP} serves {', '.join(served) or 'no version'}; doctor reads "
            + " or ".join(KUEUE_VERSIONS),
        )
    api_version = f"{KUEUE_GROUP}/{version}"
    if local_queues is None:
        return KueueReport(
            "not readable", api_version, detail=detail or f"LocalQueues in {namespace}"
        )
    states = {cq.name: cq for cq in (_cluster_queue(obj) for obj in cluster_queues) if cq.name}
    queues = tuple(
        sorted(
            (_local_queue(obj, states, unreadable or {}) for obj in local_queues),
            key=lambda q: q.name,
        )
    )
    return KueueReport("ok", api_version, queues, notes=tuple(_notes(queues)))


def _quota_line(q: GpuQuota) -> str:
    limit = f" (borrowing limit {q.borrowing_limit})" if q.borrowing_limit is not None else ""
    borrowed = f", {q.borrowed} borrowed" if q.borrowed not in ("", "0") else ""
    return (
        f"{q.flavor} {q.resource}: quota {q.nominal}{limit}, reserved {q.reserved}, "
        f"in use {q.used}{borrowed}"
    )


def _counts(pending: int, reserving: int, admitted: int) -> str:
    return f"{pending} pending, {reserving} reserving, {admitted} admitted"


def format_kueue(report: KueueReport, namespace: str) -> list[str]:
    """The Kueue section of doctor's text report, as lines."""
    if report.status == "not installed":
        return [f"Kueue: not installed ({report.detail})"]
    if report.status == "not readable":
        return [f"Kueue: not readable ({report.detail})"]
    if not report.local_queues:
        return [f"Kueue ({report.api_version}): no LocalQueue in namespace {namespace}"]
    lines = [f"Kueue ({report.api_version}): LocalQueues in namespace {namespace}"]
    for lq in report.local_queues:
        state = "" if lq.active is not False else " (not active)"
        lines.append(
            f"  {lq.name}{state} -> ClusterQueue {lq.cluster_queue}: "
            f"{_counts(lq.pending, lq.reserving, lq.admitted)}"
        )
        lines.extend(
            f"    uses {u.flavor} {u.resource}={u.total}" for u in lq.gpu_usage if u.total != "0"
        )
        cq = lq.cluster_queue_state
        if cq is None:
            lines.append(f"    ClusterQueue {lq.cluster_queue}: {lq.cluster_queue_unknown}")
            continue
        cohort = f" (cohort {cq.cohort})" if cq.cohort else ""
        inactive = " not active;" if cq.active is False else ""
        lines.append(
            f"    ClusterQueue {cq.name}{cohort}:{inactive} "
            f"{_counts(cq.pending, cq.reserving, cq.admitted)}"
        )
        if not cq.gpu_quotas:
            lines.append("      GPU quota: none")
        lines.extend(f"      {_quota_line(q)}" for q in cq.gpu_quotas)
    return lines
