"""Streams a step's output to the caller as the step prints it (as ``LogLine`` events).

Every pod of the Job is followed, each container once it has started. Lines are requested with
timestamps, so a stream that is cut (an API server restart, a read time-out) resumes from the
last second seen and drops what was already emitted: nothing is lost, nothing is said twice. The
end of a stream is not the end of the step: the outcome comes from the Job alone. The runner drains
the streams before it returns, so the last lines arrive before the Job may be deleted.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime

from k8s_step_operator._errors import ApiError
from k8s_step_operator._objects import Pod
from k8s_step_operator._runner.pods import container_statuses
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, KubeAccess, Stream

__all__ = ["LogFollower"]

log = logging.getLogger(__name__)

TAIL_LINES = 20


def _parse_ts(text: str) -> datetime | None:
    try:
        # RFC 3339 with nanoseconds: Python parses up to microseconds.
        head, _, frac = text.rstrip("Z").partition(".")
        stamp = f"{head}.{frac[:6].ljust(6, '0')}+00:00" if frac else f"{head}+00:00"
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


class _Stream:
    """One container's log, followed in its own thread, resumed without duplicates."""

    def __init__(self, owner: LogFollower, pod: str, container: str, prefix: str) -> None:
        self.owner = owner
        self.pod = pod
        self.container = container
        self.prefix = prefix
        self.last_raw_ts = ""
        self.last_ts: datetime | None = None
        self.emitted_at_last = 0  # lines emitted with the timestamp last_raw_ts
        self.replayed = 0  # lines with that timestamp seen on the current connection
        self.finished = threading.Event()
        self.complete = False  # the stream reached its end after the container stopped
        self.detached = False  # lines the follow thread still reads are dropped
        self.settling = False  # the container stopped: no more following, fetch the rest
        self.response: Stream | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"logs-{pod}-{container}", daemon=True
        )

    def _run(self) -> None:
        attempts = 0
        try:
            while not self.owner.stopped.is_set():
                ended_cleanly = not self.settling and self._follow_once(follow=True)
                if self.settling or self.owner.container_done(self.pod, self.container):
                    # The container has stopped: whatever the follow stream had not delivered
                    # (it was cut, or its back end keeps tailing) is fetched once, now.
                    if ended_cleanly or self._follow_once(follow=False):
                        self.complete = True
                    return
                attempts += 1
                if attempts > 50:
                    log.warning("giving up following logs of %s/%s", self.pod, self.container)
                    return
                self.owner.clock.wait(self.owner.stopped, min(2.0, 0.1 * attempts))
        finally:
            self.finished.set()

    def settle(self) -> None:
        """The container has stopped: end the follow stream so the rest is fetched at once."""
        if not self.settling and not self.finished.is_set():
            self.settling = True
            self.cut()

    def _follow_once(self, *, follow: bool) -> bool:
        since: int | None = None
        if self.last_ts is not None:
            age = (self.owner.clock.now() - self.last_ts).total_seconds()
            since = max(1, math.ceil(age) + 1)
        try:
            resp = self.owner.api.pod_log(
                self.owner.namespace,
                self.pod,
                self.container,
                follow=follow,
                since_seconds=since,
                timestamps=True,
                read_timeout=self.owner.read_timeout if follow else 30,
            )
        except ApiError as err:
            if err.status != 400:  # 400: container not started yet, or gone: try again later
                log.debug("log stream of %s/%s failed: %s", self.pod, self.container, err)
            return False
        if follow:
            self.response = resp
            if self.owner.stopped.is_set() or self.settling:
                resp.close()  # cut while the request was on its way, when there was no response
        self.replayed = 0
        try:
            for line in resp:
                self._emit(line)
        except ApiError as e:
            log.debug("log stream of %s/%s cut: %s", self.pod, self.container, e)
            return False
        finally:
            if follow:
                self.response = None
        return True

    def _emit(self, line: str) -> None:
        if self.detached and threading.current_thread() is self.thread:
            return  # the final fetch has taken over; emitting too would race with it
        raw_ts, _, text = line.partition(" ")
        ts = _parse_ts(raw_ts)
        if ts is None:  # not a timestamped line: emit as is
            self.owner.sink(self, line)
            return
        if self.last_ts is not None and ts < self.last_ts:
            return  # already emitted before the stream was resumed
        if raw_ts == self.last_raw_ts:
            # Several lines can share a timestamp, and a resumed stream repeats them all.
            self.replayed += 1
            if self.replayed <= self.emitted_at_last:
                return
            self.emitted_at_last += 1
        else:
            self.last_ts, self.last_raw_ts = ts, raw_ts
            self.emitted_at_last = self.replayed = 1
        self.owner.sink(self, text)

    def cut(self) -> None:
        resp = self.response
        if resp is not None:
            resp.close()

    def finish(self) -> None:
        """Fetch, without following, whatever the followed stream had not delivered yet."""
        self.detached = True
        if not self.complete:
            self._follow_once(follow=False)


class LogFollower:
    """Follows the logs of every container of every pod of one Job.

    Args:
        api: The API access.
        namespace: The Job's namespace.
        emit: Where each line goes: ``emit(pod, container, prefix, text)``; ``prefix`` is
            ``"[pod/container] "`` when the Job has several pods or containers.
        container_done: Tells whether a container has terminated (from the watcher's cache).
        read_timeout: Seconds of silence after which a stream is re-opened.
        clock: The clock (resume points, retry pauses).
    """

    def __init__(
        self,
        api: KubeAccess,
        namespace: str,
        emit: Callable[[str, str, str, str], None],
        container_done: Callable[[str, str], bool],
        read_timeout: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.clock = clock
        self.namespace = namespace
        self.emit = emit
        self.container_done = container_done
        self.read_timeout = read_timeout
        self.stopped = threading.Event()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._lock = threading.Lock()

    def sink(self, stream: _Stream, text: str) -> None:
        """Send one line of the step's output on, and keep it for the tail."""
        with self._lock:
            self.tail.append(text)
        self.emit(stream.pod, stream.container, stream.prefix, text)

    def update(self, pods: Sequence[Pod]) -> None:
        """Start following any container of these pods that has started and is not followed."""
        several = len(pods) > 1
        for pod in pods:
            name = str(pod["metadata"]["name"])
            statuses = container_statuses(pod)
            multi = len(statuses) > 1
            for cs in statuses:
                state = cs.get("state", {})
                if "running" not in state and "terminated" not in state:
                    continue
                key = (name, str(cs.get("name")))
                if key in self._streams:
                    if "terminated" in state:
                        # Fetch the end now, while the Job controller is still deciding.
                        self._streams[key].settle()
                    continue
                parts = [p for p in (name if several else "", key[1] if multi else "") if p]
                prefix = f"[{'/'.join(parts)}] " if parts else ""
                stream = _Stream(self, name, key[1], prefix)
                stream.settling = "terminated" in state  # nothing to follow: fetch it whole
                self._streams[key] = stream
                if not self.stopped.is_set():
                    stream.thread.start()
                else:
                    stream.finished.set()

    def drain(self, pods: Sequence[Pod], timeout: float) -> None:
        """Deliver every line the step printed, then stop; called once the Job has ended.

        A follow stream may stay open after its container stopped (some log back ends keep
        tailing), so open streams are cut and what they had not delivered yet is fetched once,
        without following, from the last timestamp seen.
        """
        self.stop()
        self.update(pods)  # containers not followed yet get a stream that only does the fetch
        # A cut stream's thread ends at once; one still connecting is not waited for long.
        deadline = self.clock.monotonic() + min(timeout, 2.0)
        streams = list(self._streams.values())
        for stream in streams:
            if stream.thread.ident is not None:
                stream.thread.join(max(0.0, deadline - self.clock.monotonic()))
        for stream in streams:
            if not stream.complete:
                stream.finish()

    def stop(self) -> None:
        """Stop following; open streams are closed."""
        self.stopped.set()
        for stream in list(self._streams.values()):
            stream.cut()

    def last_lines(self) -> list[str]:
        """The last lines the step printed."""
        with self._lock:
            return list(self.tail)
