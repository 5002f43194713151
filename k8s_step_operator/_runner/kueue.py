"""What Kueue says about a queued step: read from the Job's Workload, in Kueue's own words.

A Job with a queue label is created suspended and waits for Kueue to admit it. That is "queued",
not "stuck", but only Kueue's Workload says why it waits: quota (``QuotaReserved=False, reason
Pending``: "insufficient unused quota for nvidia.com/gpu in flavor h100, 2 more needed"), which
passes when other steps finish; or something waiting cannot fix (``reason Inadmissible``: the
LocalQueue does not exist, the ClusterQueue is inactive). An admitted step may be evicted again
(``Evicted=True, reason Preempted``) and re-queued: it runs again from the start.

``read_workload`` is pure. ``QueueView`` caches the two reads that are not watched: the
LocalQueue's ClusterQueue and the queue position from Kueue's visibility API (where served).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from k8s_step_operator._errors import ApiError, NotFoundError
from k8s_step_operator._objects import LocalQueue, PendingWorkload, Workload, name_of
from k8s_step_operator._runner.pods import conditions_by_type
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock

__all__ = ["KueueAccess", "QueueView", "WorkloadState", "read_workload"]

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


class KueueAccess(Protocol):
    """The reads ``QueueView`` makes."""

    def get_local_queue(self, namespace: str, name: str) -> LocalQueue:
        """A LocalQueue (``NotFoundError`` when missing)."""
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
    served (or not readable) is not asked again for five minutes.
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
