"""What Kueue says about a queued step: read from the Job's Workload, in Kueue's own words.

A Job with a queue label is created suspended and waits for Kueue to admit it. That is "queued",
not "stuck", but only Kueue's Workload says why it waits: quota (``QuotaReserved=False, reason
Pending``: "insufficient unused quota for nvidia.com/gpu in flavor h100, 2 more needed"), which
passes when other steps finish; or something waiting cannot fix (``reason Inadmissible``: the
LocalQueue does not exist, the ClusterQueue is inactive). An admitted step may be evicted again
(``Evicted=True, reason Preempted``) and re-queued: it runs again from the start.

"Pending" is not always temporary, and "inactive" not always permanent:

* a request above what the ClusterQueue can ever lend it (its quota, plus what its cohort may
  lend) is ``Pending`` with "request > maximum capacity" for each resource that does not fit
  (``never_admissible``): no step finishing will make room, so the step fails at once, in
  Kueue's words;
* a queue an admin paused (``spec.stopPolicy: Hold`` on the ClusterQueue or the LocalQueue) makes
  its Workloads ``Inadmissible`` ("ClusterQueue x is inactive"), but Kueue keeps them and admits
  them when the queue resumes: the step waits, saying who stopped which queue (``QueueState``,
  from the queue's ``Active`` condition and its managed fields);
* a ClusterQueue inactive because of its configuration (a missing ResourceFlavor, a missing or
  inactive admission check) may be mid-install: the step waits ``missing_config_grace`` for it,
  like a missing Secret, then fails naming what is missing.

``read_workload``, ``read_queue_state`` and ``never_admissible`` are pure. ``QueueView`` caches
the reads that are not watched: the LocalQueue's ClusterQueue, the queues' states (only asked
while a Workload is inadmissible) and the queue position from Kueue's visibility API (where
served).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from k8s_step_operator._errors import ApiError, NotFoundError
from k8s_step_operator._objects import (
    ClusterQueue,
    LocalQueue,
    ManagedFieldsEntry,
    PendingWorkload,
    Workload,
    name_of,
)
from k8s_step_operator._runner.pods import conditions_by_type
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock

__all__ = [
    "KueueAccess",
    "QueueState",
    "QueueView",
    "WorkloadState",
    "never_admissible",
    "read_queue_state",
    "read_workload",
]

log = logging.getLogger("k8s_step_operator")

T = TypeVar("T")


@dataclass(frozen=True)
class WorkloadState:
    """A Job's Workload, as far as a step cares.

    Attributes:
        name: The Workload's name.
        cluster_queue: The ClusterQueue that admitted it, when admitted.
        admitted: Quota is reserved and the Workload is admitted.
        flavors: Resource -> ResourceFlavor of the admission.
        waiting_reason: ``Pending`` (quota), ``Inadmissible`` (waiting will not help), or ``""``.
        message: Kueue's words about why it waits.
        evicted: Kueue's words when it evicted (preempted) the Workload; ``""`` otherwise.
        evicted_reason: The eviction's reason (``Preempted``...).
    """

    name: str
    cluster_queue: str = ""
    admitted: bool = False
    flavors: Mapping[str, str] = field(default_factory=dict)
    waiting_reason: str = ""
    message: str = ""
    evicted: str = ""
    evicted_reason: str = ""

    @property
    def inadmissible(self) -> bool:
        """Kueue says waiting cannot admit it (a missing LocalQueue, an inactive ClusterQueue)."""
        return self.waiting_reason == "Inadmissible"

    @property
    def flavor_text(self) -> str:
        """``nvidia.com/gpu=h100, cpu=default``."""
        return ", ".join(f"{r}={f}" for r, f in sorted(self.flavors.items()))


def read_workload(workload: Workload) -> WorkloadState:
    """The state of a ``Workload`` (``kueue.x-k8s.io`` v1beta1 or v1beta2: same fields)."""
    conds = conditions_by_type(workload)
    admission = workload.get("status", {}).get("admission", {})
    flavors: dict[str, str] = {}
    for assignment in admission.get("podSetAssignments") or []:
        for resource, flavor in assignment.get("flavors", {}).items():
            flavors[str(resource)] = str(flavor)
    admission_cond = conds.get("Admitted")
    admitted = admission_cond is not None and admission_cond.get("status") == "True"
    reserved = conds.get("QuotaReserved")
    waiting_reason = message = ""
    if not admitted and reserved is not None and reserved.get("status") == "False":
        waiting_reason = str(reserved.get("reason") or "")
        message = str(reserved.get("message") or "")
    evicted = conds.get("Evicted")
    evicted_message = evicted_reason = ""
    if evicted is not None and evicted.get("status") == "True":
        evicted_message = str(evicted.get("message") or "")
        evicted_reason = str(evicted.get("reason") or "")
    return WorkloadState(
        name=name_of(workload),
        cluster_queue=str(admission.get("clusterQueue") or ""),
        admitted=admitted,
        flavors=flavors,
        waiting_reason=waiting_reason,
        message=message,
        evicted=evicted_message,
        evicted_reason=evicted_reason,
    )


# Kueue's words for a request no quota of the ClusterQueue (and its cohort) can ever hold, per
# flavor tried: v0.17's "... request (16) > maximum capacity (8)", older "request > maximum
# capacity (16 > 8)"; and for a resource the ClusterQueue does not cover at all.
_NO_FIT = re.compile(
    r"insufficient quota for (?P<resource>\S+) in flavor (?P<flavor>[^,\s]+), [^,]*?"
    r"(?:request \((?P<request>[^)]+)\) > maximum capacity \((?P<max>[^)]+)\)"
    r"|request > maximum capacity \((?P<request_old>\S+) > (?P<max_old>[^)]+)\))"
)
_UNCOVERED = re.compile(r"resource (?P<resource>\S+) unavailable in ClusterQueue")
# A step that asks for a topology level (settings.topology) the flavor's Topology lacks, or a
# flavor without one: Kueue says "Pending" as for a full queue.
_NO_TOPOLOGY = re.compile(
    r"[Ff]lavor \"?(?P<flavor>[^\s\"]+)\"? (?:does not contain the requested level"
    r"|does not support TopologyAwareScheduling)"
)
# A flavor that may fit once other workloads finish, or by preemption.
_MAY_FIT = ("insufficient unused quota", "more needed", "preempt")


def never_admissible(message: str, cluster_queue: str = "") -> str:
    """Why Kueue can never admit a ``Pending`` Workload, per resource (``""``: it may).

    Kueue says ``request > maximum capacity`` when a resource asks for more than the
    ClusterQueue's quota plus what its cohort can lend, for every flavor it tried; a flavor that
    may fit later (unused quota, preemption) leaves hope.
    """
    if not message or any(words in message for words in _MAY_FIT):
        return ""
    where = f"ClusterQueue {cluster_queue}" if cluster_queue else "the ClusterQueue"
    parts = []
    for found in _NO_FIT.finditer(message):
        request = found["request"] or found["request_old"]
        most = found["max"] or found["max_old"]
        parts.append(
            f"{found['resource']}: {request} requested, {where} can lend at most {most} "
            f"(flavor {found['flavor']})"
        )
    for found in _UNCOVERED.finditer(message):
        parts.append(f"{found['resource']}: {where} has no quota for it")
    for found in _NO_TOPOLOGY.finditer(message):
        parts.append(
            f"flavor {found['flavor']} has no Topology with the level settings.topology names "
            "(set topology to a level its Topology has, or unset it)"
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class QueueState:
    """Whether a LocalQueue or ClusterQueue admits Workloads, and if not, why.

    Attributes:
        kind: ``LocalQueue`` or ``ClusterQueue``.
        name: Its name.
        active: Its ``Active`` condition (``None``: not reported).
        reason: The condition's reason (``Stopped``, ``FlavorNotFound``,
            ``AdmissionCheckNotFound``...).
        message: Kueue's words.
        stop_policy: ``spec.stopPolicy`` (``Hold``, ``HoldAndDrain``; ``""``: none).
        stopped_by: The manager that last set ``spec.stopPolicy`` (from its managed fields).
        stopped_at: When it did.
    """

    kind: str
    name: str
    active: bool | None
    reason: str = ""
    message: str = ""
    stop_policy: str = ""
    stopped_by: str = ""
    stopped_at: str = ""

    @property
    def stopped(self) -> bool:
        """Paused by an admin: Kueue keeps its Workloads and admits them when it resumes."""
        return self.active is False and (
            self.reason == "Stopped" or self.stop_policy not in ("", "None")
        )

    @property
    def misconfigured(self) -> bool:
        """Inactive for another reason than a pause: its configuration (a missing flavor...)."""
        return self.active is False and not self.stopped

    def words(self) -> str:
        """``ClusterQueue team-gpu is stopped (spec.stopPolicy Hold, set by admin at T)``."""
        if self.stopped:
            who = f", set by {self.stopped_by}" if self.stopped_by else ""
            when = f" at {self.stopped_at}" if self.stopped_at else ""
            policy = self.stop_policy or "Hold"
            return f"{self.kind} {self.name} is stopped (spec.stopPolicy {policy}{who}{when})"
        if self.reason == "NotFound":
            return f"{self.kind} {self.name} does not exist"
        said = f": {self.message}" if self.message else ""
        return f"{self.kind} {self.name} is inactive ({self.reason or 'no reason given'}){said}"


def _sets_stop_policy(entry: ManagedFieldsEntry) -> bool:
    fields = entry.get("fieldsV1") or {}
    return "f:stopPolicy" in (fields.get("f:spec") or {})


def read_queue_state(kind: str, queue: LocalQueue | ClusterQueue) -> QueueState:
    """The state of a LocalQueue or ClusterQueue (``kind`` says which), from the object."""
    active = conditions_by_type(queue).get("Active")
    stop_policy = str(queue.get("spec", {}).get("stopPolicy") or "")
    setters = sorted(
        (e for e in queue.get("metadata", {}).get("managedFields") or [] if _sets_stop_policy(e)),
        key=lambda e: str(e.get("time") or ""),
    )
    last = setters[-1] if setters and stop_policy not in ("", "None") else None
    return QueueState(
        kind=kind,
        name=name_of(queue),
        active=None if active is None else active.get("status") == "True",
        reason=str(active.get("reason") or "") if active is not None else "",
        message=str(active.get("message") or "") if active is not None else "",
        stop_policy="" if stop_policy == "None" else stop_policy,
        stopped_by=str(last.get("manager") or "") if last is not None else "",
        stopped_at=str(last.get("time") or "") if last is not None else "",
    )


class KueueAccess(Protocol):
    """The reads ``QueueView`` makes."""

    def get_local_queue(self, namespace: str, name: str) -> LocalQueue:
        """A LocalQueue (``NotFoundError`` when missing)."""
        ...

    def get_cluster_queue(self, name: str) -> ClusterQueue:
        """A ClusterQueue (``NotFoundError`` when missing)."""
        ...

    def pending_workloads(self, namespace: str, local_queue: str) -> list[PendingWorkload]:
        """Kueue's visibility API: the LocalQueue's pending Workloads with their positions."""
        ...


@dataclass
class _Entry(Generic[T]):
    at: float
    value: T


class QueueView:
    """The LocalQueues' ClusterQueues and the queue positions, shared by the steps of an operator.

    Each LocalQueue is read once a minute, the positions of its pending Workloads at most every
    ``position_ttl`` seconds whatever the number of queued steps; a visibility API that is not
    served (or not readable) is not asked again for five minutes. The queues' states (asked only
    while a Workload is inadmissible) are read at most every ``state_ttl`` seconds.
    """

    def __init__(
        self, api: KueueAccess, clock: Clock = SYSTEM_CLOCK, position_ttl: float = 10.0
    ) -> None:
        self.api = api
        self.clock = clock
        self.position_ttl = position_ttl
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], _Entry[str | None]] = {}
        self._positions: dict[tuple[str, str], _Entry[list[PendingWorkload] | None]] = {}
        self._states: dict[tuple[str, str], _Entry[QueueState | None]] = {}
        self.state_ttl = 10.0

    def queue_states(
        self, namespace: str, local_queue: str, cluster_queue: str
    ) -> tuple[QueueState | None, QueueState | None]:
        """The LocalQueue's and the ClusterQueue's states (``None``: not readable)."""
        return (
            self._state(("LocalQueue", f"{namespace}/{local_queue}"), namespace, local_queue),
            self._state(("ClusterQueue", cluster_queue), "", cluster_queue)
            if cluster_queue
            else None,
        )

    def _state(self, key: tuple[str, str], namespace: str, name: str) -> QueueState | None:
        with self._lock:
            now = self.clock.monotonic()
            entry = self._states.get(key)
            if entry is not None and now - entry.at < self.state_ttl:
                return entry.value
            state: QueueState | None
            try:
                if key[0] == "LocalQueue":
                    state = read_queue_state(key[0], self.api.get_local_queue(namespace, name))
                else:
                    state = read_queue_state(key[0], self.api.get_cluster_queue(name))
            except NotFoundError:
                state = QueueState(
                    key[0], name, active=False, reason="NotFound", message="it does not exist"
                )
            except ApiError as e:
                log.debug("cannot read %s %s: %s", key[0], key[1], e)
                state = None
            self._states[key] = _Entry(now, state)
            return state

    def cluster_queue(self, namespace: str, local_queue: str) -> str | None:
        """The ClusterQueue behind a LocalQueue; ``""`` when it does not exist, ``None`` unknown."""
        key = (namespace, local_queue)
        with self._lock:
            now = self.clock.monotonic()
            entry = self._queues.get(key)
            if entry is not None and now - entry.at < 60.0:
                return entry.value
            value: str | None
            try:
                lq = self.api.get_local_queue(namespace, local_queue)
                value = str(lq.get("spec", {}).get("clusterQueue") or "")
            except NotFoundError:
                value = ""
            except ApiError as e:
                log.debug("cannot read LocalQueue %s/%s: %s", namespace, local_queue, e)
                value = None
            self._queues[key] = _Entry(now, value)
            return value

    def position(self, namespace: str, local_queue: str, workload: str) -> int | None:
        """The Workload's position in its LocalQueue (0 is next), when Kueue reports one."""
        key = (namespace, local_queue)
        with self._lock:
            now = self.clock.monotonic()
            entry = self._positions.get(key)
            if entry is None or now - entry.at >= (
                self.position_ttl if entry.value is not None else 300.0
            ):
                items: list[PendingWorkload] | None
                try:
                    items = self.api.pending_workloads(namespace, local_queue)
                except ApiError as e:
                    log.debug("no queue positions for %s/%s: %s", namespace, local_queue, e)
                    items = None
                entry = _Entry(now, items)
                self._positions[key] = entry
            items = entry.value
        if not items:
            return None
        for item in items:
            if name_of(item) == workload:
                found = item.get("positionInLocalQueue")
                return int(found) if found is not None else None
        return None
