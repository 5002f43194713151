"""One shared, level-triggered view of a namespace's Jobs, pods and events.

``launch`` is synchronous, and a process may run hundreds of steps at once, each in its own thread.
Polling per step costs requests in proportion to steps x time and sees outcomes late; a watch per
step costs a connection per step. Instead each namespace gets one watcher per API access object:
three watch connections (Jobs, pods, events) whose events update in-memory caches and wake only
the steps whose objects changed. Steps recompute their state from the caches on every wake-up, so
duplicated or reordered events after a reconnect do no harm.

The watch rules followed here:

* list, then watch from the list's resourceVersion, with bookmarks, a server-side timeout and a
  client read timeout shorter than a minute, so a connection that goes silent (open, nothing
  flowing) is noticed within a minute and resumed;
* 410 Gone, as an error or as an ERROR event, re-lists and watches from the new version;
* connection failures (an API server restart) back off with jitter and resume from the last
  version seen;
* a refusal (401/403) is kept per kind: a re-list of one kind never clears another kind's;
* a slow periodic re-list of Jobs is a safety net against anything a watch may have missed.

Watchers are shared through a ``WatcherRegistry`` keyed by the API access object itself (never
by ``id()``, which Python reuses after garbage collection). Each operator owns its registry; there
is no process-wide one.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from k8s_step_operator._errors import ApiError
from k8s_step_operator._job.keys import (
    JOB_CONTROLLER_UID_LABEL,
    JOB_NAME_LABEL,
    KUEUE_JOB_UID_LABEL,
    LEGACY_JOB_NAME_LABEL,
    MANAGED_BY_SELECTOR,
)
from k8s_step_operator._objects import (
    Event,
    Job,
    KubeObject,
    Pod,
    WatchLine,
    Workload,
    labels_of,
)
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, Kind, KubeAccess, Stream

__all__ = ["NamespaceWatcher", "Subscription", "WatcherRegistry", "job_name_of_pod"]

log = logging.getLogger(__name__)

# Marks the records that say a watch is retried, so a console can collapse them by that mark.
RETRY_RECORD = {"k8sso_retry": True}

# Pods created by any Job carry the controller-uid label; selecting on it keeps other pods out.
POD_SELECTOR = JOB_CONTROLLER_UID_LABEL
JOB_SELECTOR = MANAGED_BY_SELECTOR

_EVENTS_PER_OBJECT = 20
# How long a watch that worked may be refused (401/403) before the steps are told: an API server
# that has just restarted refuses until its authorization caches are filled.
_REFUSAL_GRACE = 30.0
# The server ends each watch after this many seconds, and the client gives up on a connection
# silent for longer than SERVER_TIMEOUT + READ_SLACK: a dead connection is noticed within a
# minute even when the server sends no bookmarks (it promises none at any interval).
SERVER_TIMEOUT = 40
READ_SLACK = 15.0


Obj = TypeVar("Obj", bound=KubeObject)


def _rv(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion") or "")


def _newer_or_equal(a: str, b: str) -> bool:
    """Whether version ``a`` is at least ``b``; etcd revisions are integers in practice."""
    try:
        return int(a) >= int(b)
    except ValueError:
        return True


def job_name_of_pod(pod: KubeObject) -> str:
    """The name of the Job that owns a pod, from its labels or, failing that, its owner.

    Also a Kueue Workload's: any object a Job owns.
    """
    labels = labels_of(pod)
    name = labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)
    if name:
        return str(name)
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("name", ""))
    return ""


@dataclass(eq=False)
class Subscription:
    """A step's interest in one Job; ``changed`` is set whenever anything about it changes."""

    job_name: str
    changed: threading.Event = field(default_factory=threading.Event)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): re-list."""


@dataclass
class _KindState(Generic[Obj]):
    """The state of one watched resource kind, whose objects are ``Obj`` s."""

    name: Kind
    label_selector: str | None
    objects: dict[str, Obj] = field(default_factory=dict)
    resource_version: str | None = None
    synced: threading.Event = field(default_factory=threading.Event)
    stream: Stream | None = None
    last_list: float = 0.0
    refused_since: float | None = None
    failure: ApiError | None = None  # a refusal no retry will fix, for this kind only
    optional: bool = False  # its refusal concerns only the steps that use it (Kueue's Workloads)


class NamespaceWatcher:
    """Caches the Jobs, Job pods and events of one namespace, kept current by three watches.

    Args:
        api: The API access; the watcher owns no credentials of its own.
        namespace: The namespace to watch.
        clock: The clock (time-outs, back-off, the safety re-list).
        job_label_selector: Which Jobs to cache (ours by default).
        server_timeout: Seconds after which the server ends a watch (it is then resumed).
        read_timeout_slack: Extra seconds the client waits past ``server_timeout`` before it
            treats a silent connection as dead.
        safety_interval: Seconds between re-lists of Jobs, in case a watch missed something.
        on_retry: Told of each failed watch before it is resumed: ``(operation, error, delay)``.
    """

    def __init__(
        self,
        api: KubeAccess,
        namespace: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        job_label_selector: str | None = JOB_SELECTOR,
        server_timeout: int = SERVER_TIMEOUT,
        read_timeout_slack: float = READ_SLACK,
        safety_interval: float = 60.0,
        on_retry: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.api = api
        self.on_retry = on_retry
        self.namespace = namespace
        self.clock = clock
        self._server_timeout = server_timeout
        self._read_timeout = server_timeout + read_timeout_slack
        self.safety_interval = safety_interval
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._events: dict[str, deque[Event]] = defaultdict(
            lambda: deque(maxlen=_EVENTS_PER_OBJECT)
        )
        self._deleted_jobs: dict[str, str] = {}  # name -> uid of a Job seen deleted
        self._jobs = _KindState[Job]("jobs", job_label_selector)
        self._pods = _KindState[Pod]("pods", POD_SELECTOR)
        # Each kind's state by name; ``_jobs``, ``_pods`` and ``_workloads`` are the same states,
        # typed by their objects. Events are kept per involved object (``_events``).
        self._kinds: dict[Kind, _KindState[Any]] = {
            "jobs": self._jobs,
            "pods": self._pods,
            "events": _KindState[Event]("events", None),
        }
        self._threads: list[threading.Thread] = []
        self._workloads = _KindState[Workload]("workloads", None, optional=True)
        self._workloads_started = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the three watch threads and the safety net; returns at once."""
        for kind in self._kinds.values():
            t = threading.Thread(
                target=self._run, args=(kind,), name=f"watch-{kind.name}-{self.namespace}"
            )
            t.daemon = True
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._safety_net, name=f"relist-{self.namespace}")
        t.daemon = True
        t.start()
        self._threads.append(t)

    def watch_workloads(self) -> None:
        """Also watch Kueue's Workloads (started once, by the first step that has a queue)."""
        with self._lock:
            if self._workloads_started or self._stopped.is_set():
                return
            self._workloads_started = True
            self._kinds["workloads"] = self._workloads
        t = threading.Thread(
            target=self._run, args=(self._workloads,), name=f"watch-workloads-{self.namespace}"
        )
        t.daemon = True
        t.start()
        self._threads.append(t)

    @property
    def workloads_unavailable(self) -> ApiError | None:
        """Why Workloads cannot be watched (404: Kueue is not installed; 403), else ``None``."""
        kind = self._workloads
        return kind.failure if self._workloads_started else None

    def workload_of(self, job_uid: str) -> Workload | None:
        """The cached Kueue Workload of the Job with this uid, or ``None``."""
        with self._lock:
            for wl in self._workloads.objects.values():
                meta = wl.get("metadata", {})
                if meta.get("labels", {}).get(KUEUE_JOB_UID_LABEL) == job_uid or any(
                    r.get("uid") == job_uid for r in meta.get("ownerReferences") or []
                ):
                    return wl
        return None

    def stop(self) -> None:
        """Stop every thread and close the watch connections."""
        self._stopped.set()
        for kind in list(self._kinds.values()):
            self._close(kind)
        for t in self._threads:
            t.join(timeout=5)

    @property
    def stopped(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopped.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every kind has been listed once."""
        deadline = self.clock.monotonic() + timeout
        return all(
            self.clock.wait(k.synced, max(0.0, deadline - self.clock.monotonic()))
            for k in self._kinds.values()
        )

    @property
    def failure(self) -> ApiError | None:
        """A refusal (401/403) of any kind's watch that outlasted the grace, else ``None``."""
        for kind in list(self._kinds.values()):
            if kind.failure is not None and not kind.optional:
                return kind.failure
        return None

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, job_name: str) -> Subscription:
        """Register interest in a Job; the subscription fires on any change to it or its pods."""
        sub = Subscription(job_name)
        with self._lock:
            self._subs[job_name].add(sub)
        sub.changed.set()  # evaluate once at once, with whatever is cached
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Drop a subscription."""
        with self._lock:
            subs = self._subs.get(sub.job_name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_name]

    def _notify(self, job_name: str) -> None:
        for sub in self._subs.get(job_name, ()):
            sub.changed.set()

    def _notify_all(self) -> None:
        with self._lock:
            for subs in self._subs.values():
                for sub in subs:
                    sub.changed.set()

    # -- queries -------------------------------------------------------------------------

    def job(self, name: str) -> Job | None:
        """The cached Job, or ``None``."""
        with self._lock:
            return self._jobs.objects.get(name)

    def was_deleted(self, name: str, uid: str) -> bool:
        """Whether the Job with this uid was seen deleted (or vanished from a fresh list)."""
        with self._lock:
            return self._deleted_jobs.get(name) == uid

    def pods_of(self, job_uid: str) -> list[Pod]:
        """The cached pods owned by the Job with this uid, oldest first."""
        with self._lock:
            pods = [
                p
                for p in self._pods.objects.values()
                if any(
                    r.get("uid") == job_uid for r in (p["metadata"].get("ownerReferences") or [])
                )
            ]
        return sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))

    def events_for(self, *names: str) -> list[Event]:
        """The cached events whose involved object has one of these names, oldest first."""
        with self._lock:
            found = [e for n in names for e in self._events.get(n, ())]
        return sorted(found, key=_event_time)

    def remember_job(self, job: Job) -> None:
        """Put a Job we just created or read into the cache, unless a newer one is there."""
        name = job["metadata"]["name"]
        with self._lock:
            cached = self._jobs.objects.get(name)
            if cached is None or not _newer_or_equal(_rv(cached), _rv(job)):
                self._jobs.objects[name] = job
            self._deleted_jobs.pop(name, None)
            self._notify(name)

    # -- the watch loop ----------------------------------------------------------------------

    def _run(self, kind: _KindState[Obj]) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if kind.resource_version is None:
                    self.relist(kind.name)
                self.watch_once(kind.name)
                failures = 0
            except _Gone:
                log.info("watch of %s in %s expired (410); re-listing", kind.name, self.namespace)
                kind.resource_version = None
            except Exception as e:  # a watch thread never dies while the watcher runs
                if self._stopped.is_set():
                    return
                if not isinstance(e, ApiError):
                    log.exception(
                        "watch of %s in %s failed unexpectedly", kind.name, self.namespace
                    )
                    e = ApiError(f"{type(e).__name__}: {e}", operation=f"watch {kind.name}")
                self._refused(kind, e)
                failures += 1
                delay = min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(0.5, 1.0)
                if kind.optional and e.status in (403, 404):
                    # Kueue not installed, or not readable: the steps that queue are told once;
                    # look again now and then (Kueue may be installed later).
                    kind.failure = e
                    kind.synced.set()
                    self._notify_all()
                    self.clock.wait(self._stopped, 60.0)
                    continue
                log.warning(
                    "watch of %s in %s failed (%s); retrying in %.1fs",
                    kind.name,
                    self.namespace,
                    e,
                    delay,
                    extra=RETRY_RECORD,
                )
                if self.on_retry is not None:
                    self.on_retry(f"watch {kind.name} in {self.namespace}", str(e), delay)
                self.clock.wait(self._stopped, delay)

    def _refused(self, kind: _KindState[Obj], error: ApiError) -> None:
        if error.status not in (401, 403):
            return
        # Credentials or RBAC. Right after an API server restart its authorizer may refuse for
        # a few seconds; otherwise asking again will not help, and the steps waiting on this
        # watcher would wait blind. They raise it.
        now = self.clock.monotonic()
        kind.refused_since = kind.refused_since or now
        if not kind.synced.is_set() or now - kind.refused_since > _REFUSAL_GRACE:
            kind.failure = error
            self._notify_all()

    def _accepted(self, kind: _KindState[Obj]) -> None:
        kind.refused_since = None
        if kind.failure is not None:
            kind.failure = None
            self._notify_all()

    def relist(self, name: Kind) -> None:
        """List one kind and replace its cache; wakes the steps whose objects changed."""
        kind = self._kinds[name]
        listed = self.api.list_objects(kind.name, self.namespace, kind.label_selector)
        items = listed.get("items") or []
        with self._lock:
            fresh = {i["metadata"]["name"]: i for i in items}
            touched: set[str] = set()
            if kind.name == "events":
                self._events.clear()
                for event in items:
                    touched.add(self._add_event(cast(Event, event)))  # the kind listed
            else:
                for obj_name, old in kind.objects.items():
                    if obj_name not in fresh:
                        touched.add(self._job_name_for(kind, old))
                        if kind.name == "jobs":
                            self._deleted_jobs[obj_name] = old["metadata"].get("uid", "")
                for obj_name, obj in fresh.items():
                    before = kind.objects.get(obj_name)
                    if before is None or _rv(before) != _rv(obj):
                        touched.add(self._job_name_for(kind, obj))
                kind.objects = fresh
            kind.resource_version = str(listed["metadata"]["resourceVersion"])
            kind.last_list = self.clock.monotonic()
            for job_name in touched:
                self._notify(job_name)
        kind.synced.set()
        self._accepted(kind)

    def watch_once(self, name: Kind) -> None:
        """Watch one kind from its last version until the server or the client ends the watch.

        Raises:
            _Gone: The version is too old (410): the caller re-lists.
            ApiError: The watch failed; the caller backs off and resumes.
        """
        kind = self._kinds[name]
        try:
            stream = self.api.watch(
                kind.name,
                self.namespace,
                kind.label_selector,
                kind.resource_version or "",
                timeout_seconds=self._server_timeout,
                read_timeout=self._read_timeout,
            )
        except ApiError as e:
            if e.status == 410:
                raise _Gone() from e
            raise
        kind.stream = stream
        if self._stopped.is_set():
            self._close(kind)
        try:
            for line in self._lines(stream):
                self.handle(name, line)
        finally:
            self._close(kind)
        self._accepted(kind)

    def _lines(self, stream: Stream) -> Iterator[str]:
        try:
            yield from stream
        except ApiError:
            if self._stopped.is_set():
                return
            raise

    def _close(self, kind: _KindState[Obj]) -> None:
        stream, kind.stream = kind.stream, None
        if stream is not None:
            stream.close()

    def handle(self, name: Kind, line: str) -> None:
        """Apply one watch event (a JSON line) to the cache and wake the steps concerned."""
        kind = self._kinds[name]
        event: WatchLine[KubeObject] = json.loads(line)
        etype = event.get("type")
        if "type" in event and event["type"] == "ERROR":
            status = event.get("object") or {}
            if status.get("code") == 410:
                raise _Gone()
            raise ApiError(
                str(status.get("message", "watch error")),
                status=int(status.get("code") or 0),
                reason=str(status.get("reason", "")),
                operation=f"watch {kind.name} in {self.namespace}",
            )
        obj = event.get("object") or {}
        rv = _rv(obj)
        if etype == "BOOKMARK":
            kind.resource_version = rv or kind.resource_version
            return
        with self._lock:
            if rv:
                kind.resource_version = rv
            if kind.name == "events":
                if etype != "DELETED":
                    self._notify(self._add_event(cast(Event, obj)))  # the kind watched
                return
            obj_name = obj["metadata"]["name"]
            if etype == "DELETED":
                kind.objects.pop(obj_name, None)
                if kind.name == "jobs":
                    self._deleted_jobs[obj_name] = obj["metadata"].get("uid", "")
            else:
                kind.objects[obj_name] = obj
                if kind.name == "jobs":
                    self._deleted_jobs.pop(obj_name, None)
            self._notify(self._job_name_for(kind, obj))

    def _job_name_for(self, kind: _KindState[Obj], obj: KubeObject) -> str:
        if kind.name == "jobs":
            return str(obj["metadata"]["name"])
        return job_name_of_pod(obj)  # a pod's or a Workload's owning Job

    def _add_event(self, event: Event) -> str:
        involved = event.get("involvedObject", {})
        name = str(involved.get("name", ""))
        self._events[name].append(event)
        if involved.get("kind") == "Pod":
            pod = self._pods.objects.get(name)
            if pod is not None:
                return job_name_of_pod(pod)
            # Pods of a Job are named <job>-<5 random characters>.
            return name.rsplit("-", 1)[0]
        return name

    def _safety_net(self) -> None:
        while not self.clock.wait(self._stopped, min(self.safety_interval, 5.0)):
            self.safety_relist()

    def safety_relist(self) -> None:
        """Re-list Jobs if the last list is older than the safety interval."""
        jobs = self._jobs
        if self.clock.monotonic() - jobs.last_list < self.safety_interval:
            return
        try:
            listed = self.api.list_objects("jobs", self.namespace, jobs.label_selector)
        except ApiError as e:
            log.debug("safety re-list of jobs in %s failed: %s", self.namespace, e)
            return
        with self._lock:
            jobs.last_list = self.clock.monotonic()
            for item in listed.get("items") or []:
                item_name = item["metadata"]["name"]
                cached = jobs.objects.get(item_name)
                if cached is None or not _newer_or_equal(_rv(cached), _rv(item)):
                    jobs.objects[item_name] = item
                    self._notify(item_name)


def _event_time(event: Event) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


@dataclass
class _Entry:
    watcher: NamespaceWatcher
    users: int = 0
    idle: threading.Event | None = None  # set to cancel a pending linger


class WatcherRegistry:
    """Shares one watcher per (API access object, namespace) among the steps of an operator.

    Keys hold the access object itself, so two clients never share an entry by accident. The last
    user's release stops the watcher after ``linger`` idle seconds on the registry's clock: one
    watch then serves a pipeline's consecutive steps instead of re-listing and re-watching for
    each of them. ``close`` stops the watchers of one access object at once.

    Args:
        linger: Idle seconds before a watcher nobody uses is stopped (0: at once).
        clock: The clock the lingering waits on (and new watchers use unless told otherwise).
        on_retry: Given to every watcher it starts (see ``NamespaceWatcher``).
    """

    def __init__(
        self,
        linger: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        on_retry: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.linger = linger
        self.clock = clock
        self.on_retry = on_retry
        self._lock = threading.Lock()
        self._entries: dict[tuple[KubeAccess, str], _Entry] = {}

    def acquire(
        self,
        api: KubeAccess,
        namespace: str,
        *,
        clock: Clock | None = None,
        safety_interval: float | None = None,
    ) -> NamespaceWatcher:
        """The shared watcher for this access object and namespace, started on first use.

        Args:
            api: The API access.
            namespace: The namespace.
            clock: The clock a new watcher uses (``None``: the registry's).
            safety_interval: The longest a step accepts between safety re-lists; the shared
                watcher re-lists at the shortest interval any of its users asked for.
        """
        key = (api, namespace)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = _Entry(
                    NamespaceWatcher(
                        api, namespace, clock=clock or self.clock, on_retry=self.on_retry
                    )
                )
                self._entries[key] = entry
                entry.watcher.start()
            if entry.idle is not None:
                entry.idle.set()
                entry.idle = None
            entry.users += 1
            if safety_interval is not None:
                entry.watcher.safety_interval = min(entry.watcher.safety_interval, safety_interval)
            return entry.watcher

    def release(self, watcher: NamespaceWatcher) -> None:
        """Give a watcher back; it stops ``linger`` seconds after its last user left."""
        with self._lock:
            key = (watcher.api, watcher.namespace)
            entry = self._entries.get(key)
            if entry is None or entry.watcher is not watcher:
                return
            entry.users -= 1
            if entry.users > 0:
                return
            if self.linger <= 0:
                del self._entries[key]
            else:
                cancelled = threading.Event()
                entry.idle = cancelled
                reaper = threading.Thread(
                    target=self._reap,
                    args=(key, watcher, cancelled),
                    name=f"linger-{watcher.namespace}",
                    daemon=True,
                )
                reaper.start()
                return
        watcher.stop()

    def _reap(
        self, key: tuple[KubeAccess, str], watcher: NamespaceWatcher, cancelled: threading.Event
    ) -> None:
        if self.clock.wait(cancelled, self.linger):
            return  # a new user came (or the registry closed it) within the linger
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.watcher is not watcher or entry.users > 0:
                return
            if entry.idle is not cancelled:
                return
            del self._entries[key]
        watcher.stop()

    def watchers(self, api: KubeAccess | None = None) -> list[NamespaceWatcher]:
        """The running watchers (of one access object, or all)."""
        with self._lock:
            return [e.watcher for (a, _), e in self._entries.items() if api is None or a is api]

    def close(self, api: KubeAccess | None = None) -> None:
        """Stop the watchers of one access object (or all) now, whoever still uses them."""
        with self._lock:
            keys = [k for k in self._entries if api is None or k[0] is api]
            entries = [self._entries.pop(k) for k in keys]
        for entry in entries:
            if entry.idle is not None:
                entry.idle.set()
            entry.watcher.stop()
