"""The events about the steps a process follows, read when a waiting step's diagnosis needs them.

Events carry no labels and a field selector takes one value per field, so no watch can select the
events of a set of steps (the watcher's Jobs and pods are watched; events are not). They are read
on demand instead, only while a step waits where they say why, at an interval that grows with the
wait: the Jobs' ``FailedCreate`` by one reader for all the steps of a watcher (``FailedCreates``),
an unschedulable pod's by a list of that pod's (``StepEvents``).

Thousands of steps may wait for their pods at once (the Job controller makes a burst's pods at its
own pace, for minutes). Those steps do not wake on timers of their own to read: the watcher's one
reader lists the Jobs' refusals while any of them waits and wakes only the steps whose Jobs gained
one, so a waiting step wakes for a change or a heartbeat only.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

from k8s_step_operator._errors import ApiError, ForbiddenError
from k8s_step_operator._objects import Event, resource_version_of
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, KubeAccess

__all__ = ["FAILED_CREATE_SELECTOR", "FailedCreates", "StepEvents"]

log = logging.getLogger(__name__)


def _event_time(event: Event) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


# The Job controller's refusals to create a Job's pod (quota, Pod Security, a webhook): rare in a
# healthy namespace, so one list of them all serves every step of a watcher.
FAILED_CREATE_SELECTOR = "involvedObject.kind=Job,reason=FailedCreate"


def _interval(waited: float) -> float:
    """Seconds between reads of events after ``waited`` seconds of waiting: 1 s, growing to 10 s."""
    return min(10.0, max(1.0, waited / 10.0))


class FailedCreates:
    """The ``FailedCreate`` events of a namespace's Jobs, listed at once for every waiting step.

    A step waits for its pod while the Job controller works through its backlog (minutes, when
    thousands of Jobs are created at once). The steps say they wait (``wait_for``) and stop
    (``done``); ``tick``, called by the watcher's one reader thread, lists the refusals when due
    (a second after the newest waiter began to wait, then at the interval its wait asks for) and
    wakes, through ``notify``, the waiting steps whose Jobs' refusals changed.

    Args:
        api: The API access.
        namespace: The namespace.
        clock: The clock the intervals are kept on.
        notify: Wakes the steps of a Job (by name) whose refusals changed.
    """

    FIRST = 1.0  # seconds of waiting before the first read (a step passing by reads nothing)

    def __init__(
        self,
        api: KubeAccess,
        namespace: str,
        clock: Clock = SYSTEM_CLOCK,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.clock = clock
        self.notify = notify
        self._lock = threading.Lock()  # one list at a time
        self._by_job: dict[str, list[Event]] = {}
        self._read_at: float | None = None
        self.refused = False
        self._waiting_lock = threading.Lock()
        self._waiting: dict[str, float] = {}  # Job name -> when its step began to wait
        # Set when a step begins to wait: the reader looks at its due time again.
        self.wake = threading.Event()

    def about(self, job_name: str) -> list[Event]:
        """The events read so far about this Job."""
        return list(self._by_job.get(job_name, ()))

    def wait_for(self, job_name: str, since: float) -> None:
        """The step of this Job waits for its pod, since ``since`` (on the clock)."""
        with self._waiting_lock:
            if job_name in self._waiting:
                return
            self._waiting[job_name] = since
        self.wake.set()

    def done(self, job_name: str) -> None:
        """The step of this Job no longer waits for its pod (or no longer follows it)."""
        with self._waiting_lock:
            self._waiting.pop(job_name, None)

    @property
    def waiting(self) -> int:
        """How many steps wait for their pods."""
        return len(self._waiting)

    def due(self) -> float | None:
        """Seconds until the next read the waiting steps ask for; ``None`` while none waits."""
        with self._waiting_lock:
            if not self._waiting or self.refused:
                return None
            youngest = max(self._waiting.values())
        now = self.clock.monotonic()
        first = youngest + self.FIRST - now
        if self._read_at is None:
            return max(0.0, first)
        return max(0.0, first, self._read_at + _interval(now - youngest) - now)

    def tick(self) -> float | None:
        """List the refusals if due and wake the waiting steps they changed; seconds to the next.

        Returns:
            Seconds until the next read is due, ``None`` while no step waits.
        """
        delay = self.due()
        if delay is None or delay > 0:
            return delay
        with self._lock:
            changed = self._read()
        with self._waiting_lock:
            woken = [name for name in changed if name in self._waiting]
        if self.notify is not None:
            for name in woken:
                self.notify(name)
        return self.due()

    def read(self, every: float) -> bool:
        """List them unless a list is younger than ``every`` seconds; whether anything changed.

        A step that meets a problem reads at once; steps that ask at the same time wait for one
        list.
        """
        with self._lock:
            now = self.clock.monotonic()
            if self.refused or (self._read_at is not None and now - self._read_at < every):
                return False
            return bool(self._read())

    def _read(self) -> set[str]:
        """List them now (under ``_lock``); the Jobs whose refusals changed."""
        now = self.clock.monotonic()
        events = _list_events(self.api, self.namespace, FAILED_CREATE_SELECTOR)
        if events is None:
            self.refused = True
            return set()
        self._read_at = now
        by_job: dict[str, list[Event]] = defaultdict(list)
        for event in sorted(events, key=_event_time):
            by_job[str(event.get("involvedObject", {}).get("name", ""))].append(event)
        before = self._by_job
        changed = {
            name
            for name in before.keys() | by_job.keys()
            if _versions(before.get(name, ())) != _versions(by_job.get(name, ()))
        }
        self._by_job = dict(by_job)
        return changed


def _versions(events: Iterable[Event]) -> list[str]:
    return [resource_version_of(e) for e in events]


def _list_events(api: KubeAccess, namespace: str, field_selector: str) -> list[Event] | None:
    """The events a field selector selects; ``[]`` when the list failed, ``None`` when refused."""
    try:
        return api.list_events(namespace, field_selector)
    except ForbiddenError as e:
        log.warning(
            "cannot read events in %s (%s): a waiting step is reported without the scheduler's, "
            "the Job controller's and the autoscalers' words",
            namespace,
            e,
        )
        return None
    except ApiError as e:
        log.debug("cannot read events (%s) in %s: %s", field_selector, namespace, e)
        return []


class StepEvents:
    """The events about one step's Job and pods, read when its diagnosis needs them.

    Events carry no labels, and a field selector names one object: watching the events of a set
    of steps would mean a watch per step, or every event of the namespace. A step needs them only
    while it waits where they say why (the Job controller's ``FailedCreate`` on a Job with no pod;
    the scheduler's and the autoscalers' words on an unschedulable pod), so they are read then:
    the Job's by the watcher's shared ``FailedCreates`` (the step says it waits and is woken when
    they change), a pod's by its own list (``involvedObject.name``); not before a second of
    waiting unless a problem shows, then at an interval growing with the wait, up to 10 s.

    Args:
        api: The API access.
        namespace: The step's namespace.
        job: The step's Job's name.
        failed_creates: The watcher's shared reader of the Jobs' refusals (``None``: one of its
            own).
        clock: The clock the intervals are kept on.
    """

    FIRST = FailedCreates.FIRST

    def __init__(
        self,
        api: KubeAccess,
        namespace: str,
        job: str,
        failed_creates: FailedCreates | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.job = job
        self.failed_creates = failed_creates or FailedCreates(api, namespace, clock)
        self.clock = clock
        self._events: dict[str, list[Event]] = {}
        self._read_at: dict[str, float] = {}
        self._refused = False

    @staticmethod
    def interval(waited: float) -> float:
        """Seconds between reads after ``waited`` seconds of waiting: 1 s, growing to 10 s."""
        return _interval(waited)

    def events(self, names: Iterable[str]) -> list[Event]:
        """The events read so far about these objects (the Job's among them), oldest first."""
        found: list[Event] = []
        for name in names:
            found.extend(self.failed_creates.about(name) if name == self.job else ())
            found.extend(self._events.get(name, ()))
        return sorted(found, key=_event_time)

    def refresh(self, subject: str, waited: float, *, at_once: bool = False) -> bool:
        """Read the events of the object the step waits on, if due; whether anything changed.

        Args:
            subject: The Job (no pod yet) or the pod the step waits on.
            waited: Seconds the step has waited in its phase.
            at_once: A problem shows: read an object never read before whatever the wait.
        """
        now = self.clock.monotonic()
        read_at = self._read_at.get(subject)
        if subject == self.job:
            # The shared reader lists them while the step waits, and wakes it when they change;
            # a problem reads them at once (a list taken since the step began to wait serves).
            self.failed_creates.wait_for(self.job, now - waited)
            if not at_once or read_at is not None:
                return False
            self._read_at[subject] = now
            return self.failed_creates.read(min(_interval(waited), waited))
        if read_at is None and not (at_once or waited >= self.FIRST):
            return False
        if read_at is not None and now - read_at < _interval(waited):
            return False
        self._read_at[subject] = now
        if self._refused:
            return False
        events = _list_events(self.api, self.namespace, f"involvedObject.name={subject}")
        if events is None:
            self._refused = True
            return False
        before = [resource_version_of(e) for e in self._events.get(subject, ())]
        self._events[subject] = sorted(events, key=_event_time)
        return before != [resource_version_of(e) for e in self._events[subject]]

    def done_waiting(self) -> None:
        """The step no longer waits for its Job's pod: the shared reader stops reading for it."""
        self.failed_creates.done(self.job)
