"""What happens to a step, as data: typed events, published to whoever subscribed.

The runner says what it sees once, as an event; the log lines, the command line's status line, a
ZenML step's run metadata and any metrics exporter are subscribers that read the event's fields.
None of them parses another's text, so rewording a log line never breaks a status line.

Every event is a frozen dataclass. ``StepEvent`` and its subclasses concern one step's Job;
``Retrying`` concerns the process's connection to the API server (no step). Subscribers are
called synchronously, on the runner's thread, in the order they subscribed: a subscriber must
be quick and thread-safe (steps run in parallel threads), and an exception it raises is logged
and never reaches the runner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from k8s_step_operator._errors import StepError
from k8s_step_operator._runner.diagnosis import Phase, Problem

__all__ = [
    "Admitted",
    "Event",
    "EventBus",
    "Finished",
    "Heartbeat",
    "LogLine",
    "PhaseChanged",
    "Preempted",
    "RanksPlaced",
    "Retrying",
    "StepEvent",
    "Submitted",
    "Subscriber",
    "Timeline",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something the runner noticed.

    Attributes:
        at: When (UTC wall-clock time, from the runner's clock).
    """

    at: datetime


@dataclass(frozen=True, kw_only=True)
class StepEvent(Event):
    """Something about one step's Job.

    Attributes:
        step: The step's name in its pipeline.
        job: The Job's name.
        namespace: The Job's namespace.
        step_run_id: The step run the Job belongs to (``None`` when the caller gave none).
    """

    step: str
    job: str
    namespace: str
    step_run_id: str | None = None

    @property
    def where(self) -> str:
        """``namespace/job``."""
        return f"{self.namespace}/{self.job}"


@dataclass(frozen=True, kw_only=True)
class Submitted(StepEvent):
    """The Job was created, or an existing Job of the same step run was adopted.

    Attributes:
        reattached: The Job existed already (a restarted caller, or a lost create answer).
    """

    reattached: bool = False


@dataclass(frozen=True, kw_only=True)
class PhaseChanged(StepEvent):
    """The step entered a phase, or what keeps it there changed.

    Attributes:
        phase: The phase now.
        previous: The phase before (the same phase when only the summary changed).
        summary: One line saying why the step is where it is.
        problem: What keeps the step from progressing, if anything (each has its own bound).
        reason: Kubernetes' or Kueue's reason word, when there is one.
        message: Kubernetes' or Kueue's message, when there is one.
        pod: The pod the phase was read from, once there is one.
        node: The node the pod runs on, once it is scheduled.
        elapsed: Seconds in the phase so far (0 when just entered).
    """

    phase: Phase
    previous: Phase | None
    summary: str
    problem: Problem | None = None
    reason: str = ""
    message: str = ""
    pod: str = ""
    node: str = ""
    elapsed: float = 0.0

    @property
    def entered(self) -> bool:
        """Whether the phase itself changed (not only its summary)."""
        return self.phase is not self.previous


@dataclass(frozen=True, kw_only=True)
class Heartbeat(StepEvent):
    """The step is still in the same phase, and nothing else was said for a while.

    Attributes:
        phase: The phase.
        elapsed: Seconds in that phase.
        summary: Why the step is there.
        bound_name: The setting that bounds this phase (``""``: none does).
        bound: Its value in seconds (``None``: unbounded).
    """

    phase: Phase
    elapsed: float
    summary: str
    bound_name: str = ""
    bound: float | None = None


@dataclass(frozen=True, kw_only=True)
class Admitted(StepEvent):
    """Kueue admitted the step's Workload.

    Attributes:
        cluster_queue: The ClusterQueue that admitted it.
        flavors: ResourceFlavor per resource, as Kueue assigned them.
    """

    cluster_queue: str
    flavors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Preempted(StepEvent):
    """Kueue evicted the admitted step; it is queued again and will run again from the start.

    Attributes:
        reason: Kueue's reason (``Preempted``, ``PodsReadyTimeout``...).
        message: Kueue's message.
    """

    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class RanksPlaced(StepEvent):
    """Every rank of a step on several nodes has a node: where the step landed.

    Attributes:
        nodes: The node of each rank, by rank.
        level: The topology level the ranks were asked to share (``settings.topology``), or
            ``""``.
        domains: With a level, each node's domain in it (its value of that label; ``""`` when
            the nodes could not be read).
    """

    nodes: Mapping[int, str]
    level: str = ""
    domains: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """``2 ranks placed: rank 0 on a, rank 1 on b; all in <level>=<domain>``."""
        where = ", ".join(f"rank {r} on {n}" for r, n in sorted(self.nodes.items()))
        text = f"{len(self.nodes)} ranks placed: {where}"
        if self.level:
            values = {self.domains.get(n, "") for n in self.nodes.values()}
            if len(values) == 1 and "" not in values:
                text += f"; all in {self.level}={values.pop()}"
            elif "" in values:
                text += f"; their {self.level} is not known (nodes not readable)"
            else:
                text += f"; across {self.level} " + ", ".join(sorted(values))
        return text


@dataclass(frozen=True, kw_only=True)
class LogLine(StepEvent):
    """One line the step printed.

    Attributes:
        pod: The pod that printed it.
        container: Its container.
        text: The line, without its timestamp.
        prefix: ``"[rank N] "`` for a step on several nodes (``"[rank N/container] "`` with
            several containers), ``"[pod/container] "`` when a Job of one rank has several pods
            or containers, else ``""``.
    """

    pod: str
    container: str
    text: str
    prefix: str = ""


@dataclass(frozen=True)
class Timeline:
    """Where a step spent its time: seconds per phase, from submission to the end.

    Attributes:
        seconds: Seconds spent in each phase (a phase entered twice, as after a preemption,
            counts both stays).
        node: The node the step ran on last (``""``: it never got one; rank 0's with several).
        gpus: GPUs per pod the step requested.
        gpu_resource: The extended resource its GPUs are (``nvidia.com/gpu``...), ``""`` if none.
        ranks: Pods that ran at once (the step's nodes).
    """

    seconds: Mapping[Phase, float] = field(default_factory=dict)
    node: str = ""
    gpus: int = 0
    gpu_resource: str = ""
    ranks: int = 1

    def of(self, phase: Phase) -> float:
        """Seconds spent in ``phase``."""
        return float(self.seconds.get(phase, 0.0))

    @property
    def gpu_seconds(self) -> float:
        """GPUs held times seconds running: what the step cost in GPU time (every rank's)."""
        return self.gpus * self.ranks * self.of(Phase.RUNNING)


@dataclass(frozen=True, kw_only=True)
class Finished(StepEvent):
    """The step ended: succeeded, failed, or was stopped.

    Attributes:
        succeeded: Whether the Job succeeded.
        error: Why it did not (the error ``launch`` raises), ``None`` on success.
        timeline: Where it spent its time.
    """

    succeeded: bool
    error: StepError | None = None
    timeline: Timeline = field(default_factory=Timeline)


@dataclass(frozen=True, kw_only=True)
class Retrying(Event):
    """A call or a watch to the API server failed and is being tried again.

    Attributes:
        operation: What is retried (``"watch pods in ml"``, ``"create Job ml/x"``).
        error: What went wrong.
        delay: Seconds until the next attempt.
        attempt: The attempt that failed (0 when not counted, as for watches).
    """

    operation: str
    error: str
    delay: float
    attempt: int = 0

    @property
    def text(self) -> str:
        """``retrying watch pods in ml in 0.4s: <error>``."""
        which = f" (attempt {self.attempt})" if self.attempt else ""
        return f"retrying {self.operation} in {self.delay:.1f}s{which}: {self.error}"


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribers; one per operator, shared by the steps it runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Deliver every later event to ``subscriber``; returns the call that stops that."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                subs = list(self._subscribers)
                if subscriber in subs:
                    subs.remove(subscriber)
                self._subscribers = tuple(subs)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; a subscriber's failure is logged, not raised."""
        for subscriber in self._subscribers:  # a tuple: safe while others (un)subscribe
            try:
                subscriber(event)
            except Exception:
                log.exception("an event subscriber failed on %s", type(event).__name__)
