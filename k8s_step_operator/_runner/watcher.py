"""One shared, level-triggered view of a namespace's Jobs, pods and events.

``launch`` is synchronous, and a process may run hundreds of steps at once, each in its own thread.
Polling per step costs requests in proportion to steps x time and sees outcomes late; a watch per
step costs a connection per step. Instead each namespace gets one watcher per process: three
watch connections (Jobs, pods, events) whose events update in-memory caches and wake only the
steps whose objects changed. Steps recompute their state from the caches on every wake-up, so
duplicated or reordered events after a reconnect do no harm.

The watch rules followed here:

* list, then watch from the list's resourceVersion, with bookmarks, a server-side timeout and a
  client read timeout (a silent connection cannot hang a step forever);
* 410 Gone, as an exception or as an ERROR event, re-lists and watches from the new version;
* connection failures (an API server restart) back off with jitter and resume from the last
  version seen;
* a slow periodic re-list of Jobs is a safety net against anything a watch may have missed.

Payloads are decoded as raw JSON: model deserialization would cost more CPU than the steps'
bookkeeping when hundreds of Jobs move at once.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from k8s_step_operator._errors import ApiError
from k8s_step_operator._kube.client import abort, api_error, read_json

__all__ = ["NamespaceWatcher", "Subscription", "acquire_watcher", "release_watcher"]

log = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
# Pods created by any Job carry this label; selecting on it keeps other pods out of the cache.
POD_SELECTOR = "batch.kubernetes.io/controller-uid"

_EVENTS_PER_OBJECT = 20
# How long a watch that worked may be refused (401/403) before the steps are told: an API server
# that has just restarted refuses until its authorization caches are filled.
_REFUSAL_GRACE = 30.0


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _newer_or_equal(a: str, b: str) -> bool:
    """Whether version ``a`` is at least ``b``; etcd revisions are integers in practice."""
    try:
        return int(a) >= int(b)
    except ValueError:
        return True


def job_name_of_pod(pod: dict[str, Any]) -> str:
    """The name of the Job that owns a pod, from its labels or, failing that, its owner."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    name = labels.get(JOB_NAME_LABEL) or labels.get(LEGACY_JOB_NAME_LABEL)
    if name:
        return str(name)
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("name", ""))
    return ""


@dataclass(eq=False)
class Subscription:
    """A step's interest in one Job; ``changed`` is set whenever anything about it changes."""

    job_name: str
    changed: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> bool:
        """Wait for a change; returns whether one happened. Clears the flag before returning."""
        fired = self.changed.wait(timeout)
        self.changed.clear()
        return fired


@dataclass
class _Kind:
    """The state of one watched resource kind."""

    name: str
    list_fn: Callable[..., Any]
    label_selector: str | None
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    resource_version: str | None = None
    synced: threading.Event = field(default_factory=threading.Event)
    stream: Any = None
    connected: bool = False
    last_list: float = 0.0
    expire_next: bool = False
    refused_since: float | None = None


class NamespaceWatcher:
    """Caches the Jobs, Job pods and events of one namespace, kept current by three watches.

    Args:
        api_client: The client to use; the watcher owns no credentials of its own.
        namespace: The namespace to watch.
        job_label_selector: Which Jobs to cache (ours by default).
        server_timeout: Seconds after which the server ends a watch (it is then resumed).
        read_timeout_slack: Extra seconds the client waits past ``server_timeout`` before it
            treats a silent connection as dead.
        safety_interval: Seconds between re-lists of Jobs, in case a watch missed something.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        *,
        job_label_selector: str | None = "app.kubernetes.io/managed-by=k8s-step-operator",
        server_timeout: int = 240,
        read_timeout_slack: float = 30.0,
        safety_interval: float = 60.0,
    ) -> None:
        self.namespace = namespace
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._server_timeout = server_timeout
        self._read_timeout = server_timeout + read_timeout_slack
        self.safety_interval = safety_interval
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._events: dict[str, deque[dict[str, Any]]] = defaultdict(
            lambda: deque(maxlen=_EVENTS_PER_OBJECT)
        )
        self._deleted_jobs: dict[str, str] = {}  # name -> uid of a Job seen deleted
        self._kinds = {
            "jobs": _Kind("jobs", self._batch.list_namespaced_job, job_label_selector),
            "pods": _Kind("pods", self._core.list_namespaced_pod, POD_SELECTOR),
            "events": _Kind("events", self._core.list_namespaced_event, None),
        }
        self._threads: list[threading.Thread] = []
        self.gone_count = 0  # watches that expired (410) and were recovered by a re-list
        self.failure: ApiError | None = None  # a refusal (401/403) no retry will fix

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

    def stop(self) -> None:
        """Stop every thread and close the watch connections."""
        self._stopped.set()
        for kind in self._kinds.values():
            self._close(kind)
        for t in self._threads:
            t.join(timeout=5)

    def force_expired(self) -> None:
        """Resume every watch from a version long compacted away, as after a long outage.

        The server answers 410 Gone; the watcher must re-list. Used to test that path.
        """
        for kind in self._kinds.values():
            kind.expire_next = True
            self._close(kind)

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every kind has been listed once."""
        deadline = time.monotonic() + timeout
        return all(
            k.synced.wait(max(0.0, deadline - time.monotonic())) for k in self._kinds.values()
        )

    @property
    def open_watches(self) -> int:
        """How many watch connections are open now."""
        return sum(1 for k in self._kinds.values() if k.connected)

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

    # -- queries -------------------------------------------------------------------------

    def job(self, name: str) -> dict[str, Any] | None:
        """The cached Job, or ``None``."""
        with self._lock:
            return self._kinds["jobs"].objects.get(name)

    def was_deleted(self, name: str, uid: str) -> bool:
        """Whether the Job with this uid was seen deleted (or vanished from a fresh list)."""
        with self._lock:
            return self._deleted_jobs.get(name) == uid

    def pods_of(self, job_uid: str) -> list[dict[str, Any]]:
        """The cached pods owned by the Job with this uid, oldest first."""
        with self._lock:
            pods = [
                p
                for p in self._kinds["pods"].objects.values()
                if any(
                    r.get("uid") == job_uid for r in (p["metadata"].get("ownerReferences") or [])
                )
            ]
        return sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))

    def events_for(self, *names: str) -> list[dict[str, Any]]:
        """The cached events whose involved object has one of these names, oldest first."""
        with self._lock:
            found = [e for n in names for e in self._events.get(n, ())]
        return sorted(found, key=_event_time)

    def remember_job(self, job: dict[str, Any]) -> None:
        """Put a Job we just created or read into the cache, unless a newer one is there."""
        name = job["metadata"]["name"]
        with self._lock:
            cached = self._kinds["jobs"].objects.get(name)
            if cached is None or not _newer_or_equal(_rv(cached), _rv(job)):
                self._kinds["jobs"].objects[name] = job
            self._deleted_jobs.pop(name, None)
            self._notify(name)

    # -- the watch loop ----------------------------------------------------------------------

    def _run(self, kind: _Kind) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if kind.resource_version is None:
                    self._relist(kind)
                self._watch_once(kind)
                failures = 0
                kind.refused_since = None
                self.failure = None
            except _Gone:
                log.info("watch of %s in %s expired (410); re-listing", kind.name, self.namespace)
                self.gone_count += 1
                kind.resource_version = None
            except ApiError as e:
                if self._stopped.is_set():
                    return
                if e.status in (401, 403):
                    # Credentials or RBAC. Right after an API server restart its authorizer may
                    # refuse for a few seconds; otherwise asking again will not help, and the
                    # steps waiting on this watcher would wait blind. They raise it.
                    now = time.monotonic()
                    kind.refused_since = kind.refused_since or now
                    if not kind.synced.is_set() or now - kind.refused_since > _REFUSAL_GRACE:
                        self.failure = e
                        with self._lock:
                            for subs in self._subs.values():
                                for sub in subs:
                                    sub.changed.set()
                failures += 1
                delay = min(5.0, 0.2 * 2 ** min(failures, 5)) * random.uniform(0.5, 1.0)
                log.warning(
                    "watch of %s in %s failed (%s); retrying in %.1fs",
                    kind.name,
                    self.namespace,
                    e,
                    delay,
                )
                self._stopped.wait(delay)
            finally:
                kind.connected = False

    def _relist(self, kind: _Kind) -> None:
        listed = self._list(kind)
        items = listed.get("items") or []
        with self._lock:
            fresh = {i["metadata"]["name"]: i for i in items}
            touched: set[str] = set()
            if kind.name == "events":
                self._events.clear()
                for event in items:
                    touched.add(self._add_event(event))
            else:
                for name, old in kind.objects.items():
                    if name not in fresh:
                        touched.add(self._job_name_for(kind, old))
                        if kind.name == "jobs":
                            self._deleted_jobs[name] = old["metadata"].get("uid", "")
                for name, obj in fresh.items():
                    before = kind.objects.get(name)
                    if before is None or _rv(before) != _rv(obj):
                        touched.add(self._job_name_for(kind, obj))
                kind.objects = fresh
            kind.resource_version = str(listed["metadata"]["resourceVersion"])
            kind.last_list = time.monotonic()
            for job_name in touched:
                self._notify(job_name)
        kind.synced.set()
        kind.refused_since = None
        self.failure = None

    def _list(self, kind: _Kind) -> dict[str, Any]:
        try:
            resp = kind.list_fn(
                self.namespace,
                label_selector=kind.label_selector,
                _preload_content=False,
                _request_timeout=(10, 60),
            )
        except Exception as e:
            raise api_error(e, f"list {kind.name} in {self.namespace}") from e
        result: dict[str, Any] = read_json(resp)
        return result

    def _watch_once(self, kind: _Kind) -> None:
        version = "1" if kind.expire_next else kind.resource_version
        kind.expire_next = False
        try:
            resp = kind.list_fn(
                self.namespace,
                label_selector=kind.label_selector,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._server_timeout,
                _preload_content=False,
                _request_timeout=(10, self._read_timeout),
            )
        except ApiException as e:
            if e.status == 410:
                raise _Gone() from e
            raise api_error(e, f"watch {kind.name} in {self.namespace}") from e
        except Exception as e:
            raise api_error(e, f"watch {kind.name} in {self.namespace}") from e
        kind.stream = resp
        kind.connected = True
        try:
            for line in self._lines(resp, kind):
                self._handle(kind, line)
        finally:
            self._close(kind)

    def _lines(self, resp: Any, kind: _Kind) -> Iterator[str]:
        try:
            yield from iter_resp_lines(resp)
        except Exception as e:
            if self._stopped.is_set():
                return
            raise api_error(e, f"watch {kind.name} in {self.namespace}") from e

    def _close(self, kind: _Kind) -> None:
        stream, kind.stream = kind.stream, None
        if stream is not None:
            abort(stream)

    def _handle(self, kind: _Kind, line: str) -> None:
        event = json.loads(line)
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiError(
                str(obj.get("message", "watch error")),
                status=int(obj.get("code") or 0),
                reason=str(obj.get("reason", "")),
                operation=f"watch {kind.name} in {self.namespace}",
            )
        rv = _rv(obj)
        if etype == "BOOKMARK":
            kind.resource_version = rv or kind.resource_version
            return
        with self._lock:
            if rv:
                kind.resource_version = rv
            if kind.name == "events":
                if etype != "DELETED":
                    self._notify(self._add_event(obj))
                return
            name = obj["metadata"]["name"]
            if etype == "DELETED":
                kind.objects.pop(name, None)
                if kind.name == "jobs":
                    self._deleted_jobs[name] = obj["metadata"].get("uid", "")
            else:
                kind.objects[name] = obj
                if kind.name == "jobs":
                    self._deleted_jobs.pop(name, None)
            self._notify(self._job_name_for(kind, obj))

    def _job_name_for(self, kind: _Kind, obj: dict[str, Any]) -> str:
        if kind.name == "jobs":
            return str(obj["metadata"]["name"])
        return job_name_of_pod(obj)

    def _add_event(self, event: dict[str, Any]) -> str:
        involved = event.get("involvedObject") or {}
        name = str(involved.get("name", ""))
        self._events[name].append(event)
        if involved.get("kind") == "Pod":
            pod = self._kinds["pods"].objects.get(name)
            if pod is not None:
                return job_name_of_pod(pod)
            # Pods of a Job are named <job>-<5 random characters>.
            return name.rsplit("-", 1)[0]
        return name

    def _safety_net(self) -> None:
        jobs = self._kinds["jobs"]
        while not self._stopped.wait(min(self.safety_interval, 5.0)):
            if time.monotonic() - jobs.last_list < self.safety_interval:
                continue
            try:
                listed = self._list(jobs)
            except ApiError as e:
                log.debug("safety re-list of jobs in %s failed: %s", self.namespace, e)
                continue
            with self._lock:
                jobs.last_list = time.monotonic()
                for item in listed.get("items") or []:
                    name = item["metadata"]["name"]
                    cached = jobs.objects.get(name)
                    if cached is None or not _newer_or_equal(_rv(cached), _rv(item)):
                        jobs.objects[name] = item
                        self._notify(name)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): re-list."""


def _event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


_registry_lock = threading.Lock()
_registry: dict[tuple[int, str], tuple[NamespaceWatcher, int]] = {}


def acquire_watcher(
    api_client: k8s.ApiClient, namespace: str, *, safety_interval: float | None = None
) -> NamespaceWatcher:
    """The process's shared watcher for this client and namespace, started on first use.

    Args:
        api_client: The client.
        namespace: The namespace.
        safety_interval: The longest a step accepts between safety re-lists; the shared
            watcher re-lists at the shortest interval any of its users asked for.
    """
    key = (id(api_client), namespace)
    with _registry_lock:
        entry = _registry.get(key)
        if entry is None:
            watcher = NamespaceWatcher(api_client, namespace)
            count = 0
        else:
            watcher, count = entry
        if safety_interval is not None:
            watcher.safety_interval = min(watcher.safety_interval, safety_interval)
        if entry is None:
            watcher.start()
        _registry[key] = (watcher, count + 1)
        return watcher


def release_watcher(watcher: NamespaceWatcher, linger: float = 60.0) -> None:
    """Give a watcher back; the last user's release stops it after ``linger`` idle seconds.

    Lingering keeps one watch serving a pipeline's consecutive steps instead of re-listing and
    re-watching for each of them.
    """
    with _registry_lock:
        for key, (w, count) in list(_registry.items()):
            if w is watcher:
                _registry[key] = (w, count - 1)
                if count - 1 > 0:
                    return
                break
        else:
            return

    def reap() -> None:
        with _registry_lock:
            entry = _registry.get(key)
            if entry is None or entry[0] is not watcher or entry[1] > 0:
                return
            del _registry[key]
        watcher.stop()

    timer = threading.Timer(linger, reap)
    timer.daemon = True
    timer.start()
