"""In-memory fakes of the few things the runner touches: the API calls it makes, and the clock.

``FakeKube`` keeps Jobs, pods, events and Secrets in dicts, numbers every change with a
resourceVersion and serves lists and watches from them the way the API server does (selectors,
bookmarks aside; 410 for a version older than ``compacted``). Errors are injected per method.
``FakeClock`` is time that moves only when told: in the driving thread a ``wait`` runs the actions
scheduled before its deadline and moves time forward at once, so a 600 s timeout takes no time;
in other threads a ``wait`` blocks until the driver (or the test) moves time past its deadline.
``SyncWatchers`` hands out watchers that are fed synchronously from the fake's changes, so a
``StepRun`` can be followed from start to end in one thread, deterministically.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from k8s_step_operator import ApiError, ConflictError, ForbiddenError, NotFoundError
from k8s_step_operator._runner.ports import Kind
from k8s_step_operator._runner.watcher import NamespaceWatcher, WatcherRegistry

Obj = dict[str, Any]


class FakeClock:
    """Monotonic and wall time that move only when ``advance`` or a driving ``wait`` says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.epoch = datetime(2026, 1, 1, tzinfo=UTC)
        self.driver = threading.get_ident()
        self._cond = threading.Condition()
        self._actions: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self.t)

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` when time reaches ``when`` (absolute, on this clock)."""
        heapq.heappush(self._actions, (when, next(self._seq), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.t + delay, action)

    def advance(self, seconds: float) -> None:
        """Move time forward, running the actions due on the way."""
        self._run_until(self.t + seconds, None)

    def _run_until(self, deadline: float, event: threading.Event | None) -> bool:
        while self._actions and self._actions[0][0] <= deadline:
            when, _, action = heapq.heappop(self._actions)
            with self._cond:
                self.t = max(self.t, when)
                self._cond.notify_all()
            action()
            if event is not None and event.is_set():
                return True
        with self._cond:
            self.t = max(self.t, deadline)
            self._cond.notify_all()
        return event is not None and event.is_set()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if threading.get_ident() == self.driver:
            return self._run_until(self.t + timeout, event)
        deadline = self.t + timeout
        with self._cond:
            while not event.is_set() and self.t < deadline:
                # Woken by ``advance``; the short real timeout only notices an event set by
                # another thread, which does not notify this condition.
                self._cond.wait(0.01)
        return event.is_set()


class FakeStream:
    """A watch or log response: lines queued by the fake, ended by the server or by ``close``."""

    def __init__(self, kube: FakeKube, kind: str, namespace: str, selector: str | None) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.selector = selector
        self._lines: list[str] = []
        self.sent: list[str] = []  # every line the server sent on this stream
        self._cond = threading.Condition()
        self.closed = False
        self.ended = False

    def push(self, line: str) -> None:
        with self._cond:
            self.sent.append(line)
            self._lines.append(line)
            self._cond.notify_all()

    def end(self) -> None:
        """The server ends the response (its time-out)."""
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[str]:
        while True:
            with self._cond:
                while not self._lines and not self.closed and not self.ended:
                    self._cond.wait(1.0)
                if self.closed:
                    return
                if not self._lines:
                    return
                line = self._lines.pop(0)
            yield line


@dataclass
class Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def _terms(selector: str) -> list[str]:
    """A label selector's terms: commas inside ``in (...)`` do not separate terms."""
    terms, depth, term = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(term.strip())
            term = ""
        else:
            term += ch
    return [*terms, term.strip()]


def _matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Whether the object's labels match an equality or set-based (``in``) label selector."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in _terms(selector):
        if " in (" in term:
            key, _, values = term.partition(" in (")
            if labels.get(key.strip()) not in {v.strip() for v in values.rstrip(")").split(",")}:
                return False
            continue
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


class FakeKube:
    """An in-memory API server for the calls of ``KubeAccess``."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.store: dict[str, dict[tuple[str, str], Obj]] = defaultdict(dict)
        self.rv = 100
        self.history: list[tuple[int, str, str, str, Obj]] = []
        self.compacted = 0
        self.calls: list[Call] = []
        self.errors: dict[str, list[ApiError]] = defaultdict(list)
        self.listeners: list[Callable[[str, str, str], None]] = []
        self.streams: list[FakeStream] = []
        self.nodes: list[Obj] = []
        self.nodes_forbidden = False
        self.refuse: dict[str, ApiError] = {}  # kind -> error of every list and watch
        self.nodepools: list[Obj] | None = None  # None: Karpenter's API is not served
        self.configmaps: dict[tuple[str, str], Obj] = {}
        # Kueue's visibility API: (namespace, LocalQueue) -> pending workloads; None: not served.
        self.visibility: dict[tuple[str, str], list[Obj]] | None = None
        self.logs: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self.on_create: Callable[[Obj], None] | None = None
        self.delete_removes_pods = True
        self._pages: dict[str, tuple[int, list[Obj]]] = {}
        self._lock = threading.RLock()

    # -- test controls ----------------------------------------------------------------------

    def fail(self, method: str, error: ApiError, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error``."""
        self.errors[method].extend([error] * times)

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c.method == method)

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append(Call(method, args, kwargs))
            queued = self.errors.get(method)
            if queued:
                raise queued.pop(0)

    def emit(self, kind: str, namespace: str, etype: str, obj: Obj) -> None:
        """Record a change and deliver it to watches and listeners."""
        with self._lock:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            snapshot = copy.deepcopy(obj)
            self.history.append((self.rv, kind, namespace, etype, snapshot))
            line = json.dumps({"type": etype, "object": snapshot})
            streams = [
                s
                for s in self.streams
                if s.kind == kind
                and s.namespace == namespace
                and not s.closed
                and _matches(snapshot, s.selector)
            ]
            listeners = list(self.listeners)
        for s in streams:
            s.push(line)
        for listener in listeners:
            listener(kind, namespace, line)

    def put(self, kind: str, namespace: str, obj: Obj) -> Obj:
        """Create or replace an object (ADDED or MODIFIED)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
        key = (namespace, meta["name"])
        with self._lock:
            etype = "MODIFIED" if key in self.store[kind] else "ADDED"
            self.store[kind][key] = obj
        self.emit(kind, namespace, etype, obj)
        return obj

    def remove(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            obj = self.store[kind].pop((namespace, name), None)
        if obj is not None:
            self.emit(kind, namespace, "DELETED", obj)

    def end_watches(self) -> None:
        """End every open watch, as the server does at its time-out."""
        for s in list(self.streams):
            s.end()

    # -- scenario helpers --------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> Obj | None:
        return self.store["jobs"].get((namespace, name))

    def pods_of(self, job: Obj) -> list[Obj]:
        uid = job["metadata"]["uid"]
        return [
            p
            for p in self.store["pods"].values()
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    def set_pod(
        self, job: Obj, suffix: str = "abcde", *, rank: int | None = None, **status: Any
    ) -> Obj:
        """Create or update the Job's pod ``<job>-<suffix>``; ``status`` and ``spec`` merge.

        With ``rank``, the pod is that rank of an Indexed Job (``<job>-<rank>-<suffix>``, with
        the completion index annotation the Job controller sets). ``metadata`` merges too.
        """
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pod_name = f"{name}-{suffix}" if rank is None else f"{name}-{rank}-{suffix}"
        existing = self.store["pods"].get((ns, pod_name))
        pod = (
            copy.deepcopy(existing)
            if existing
            else {
                "metadata": {
                    "name": pod_name,
                    "namespace": ns,
                    # The template's labels, and the Job controller's.
                    "labels": {
                        **((job["spec"]["template"].get("metadata") or {}).get("labels") or {}),
                        "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                        "batch.kubernetes.io/job-name": name,
                    },
                    "annotations": {}
                    if rank is None
                    else {"batch.kubernetes.io/job-completion-index": str(rank)},
                    "ownerReferences": [
                        {"kind": "Job", "name": name, "uid": job["metadata"]["uid"]}
                    ],
                },
                "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
                "status": {"phase": "Pending"},
            }
        )
        spec = status.pop("spec", None)
        if spec:
            pod["spec"].update(spec)
        metadata = status.pop("metadata", None)
        if metadata:
            pod["metadata"].update(metadata)
        pod["status"].update(status)
        return self.put("pods", ns, pod)

    def set_job_condition(
        self, job: Obj, ctype: str, reason: str = "", message: str = "", **spec: Any
    ) -> None:
        current = copy.deepcopy(
            self.store["jobs"][(job["metadata"]["namespace"], job["metadata"]["name"])]
        )
        conds = current.setdefault("status", {}).setdefault("conditions", [])
        conds.append({"type": ctype, "status": "True", "reason": reason, "message": message})
        current["spec"].update(spec)
        self.put("jobs", current["metadata"]["namespace"], current)

    def set_job(self, job: Obj, **changes: Any) -> Obj:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        current = copy.deepcopy(self.store["jobs"][(ns, name)])
        for key, value in changes.items():
            current[key] = value
        return self.put("jobs", ns, current)

    def add_event(
        self,
        namespace: str,
        kind: str,
        name: str,
        reason: str,
        message: str,
        *,
        etype: str = "Warning",
        source: str = "",
    ) -> None:
        event = {
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}", "namespace": namespace},
            "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
            "reason": reason,
            "message": message,
            "type": etype,
            "source": {"component": source},
            "lastTimestamp": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.put("events", namespace, event)

    # -- KubeAccess ----------------------------------------------------------------------------

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> Obj:
        self._record("create_job", namespace, job)
        name = job["metadata"]["name"]
        if (namespace, name) in self.store["jobs"]:
            raise ConflictError(
                f'jobs.batch "{name}" already exists', status=409, reason="AlreadyExists"
            )
        created = copy.deepcopy(dict(job))
        created.setdefault("status", {})
        self.put("jobs", namespace, created)
        if self.on_create is not None:
            self.on_create(created)
        return copy.deepcopy(created)

    def get_job(self, namespace: str, name: str) -> Obj:
        self._record("get_job", namespace, name)
        job = self.store["jobs"].get((namespace, name))
        if job is None:
            raise NotFoundError(f'jobs.batch "{name}" not found', status=404, reason="NotFound")
        return copy.deepcopy(job)

    def delete_job(
        self, namespace: str, name: str, *, uid: str | None, budget: float | None = None
    ) -> None:
        self._record("delete_job", namespace, name, uid=uid, budget=budget)
        job = self.store["jobs"].get((namespace, name))
        if job is None:
            raise NotFoundError(f'jobs.batch "{name}" not found', status=404, reason="NotFound")
        if uid and job["metadata"]["uid"] != uid:
            raise ConflictError("uid precondition failed", status=409, reason="Conflict")
        pods = self.pods_of(job)
        self.remove("jobs", namespace, name)
        if self.delete_removes_pods:
            for pod in pods:
                self.remove("pods", namespace, pod["metadata"]["name"])
        # The garbage collector: the Job's companions (its Secret, its ranks' Service) go too.
        uid = job["metadata"]["uid"]
        for kind in ("secrets", "services"):
            for (ns, other), obj in list(self.store[kind].items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if ns == namespace and any(o.get("uid") == uid for o in owners):
                    self.remove(kind, ns, other)

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> Obj:
        self._record("create_secret", namespace, secret)
        name = secret["metadata"]["name"]
        if (namespace, name) in self.store["secrets"]:
            raise ConflictError("exists", status=409, reason="AlreadyExists")
        return copy.deepcopy(self.put("secrets", namespace, copy.deepcopy(dict(secret))))

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> Obj:
        self._record("create_service", namespace, service)
        name = service["metadata"]["name"]
        if (namespace, name) in self.store["services"]:
            raise ConflictError("exists", status=409, reason="AlreadyExists")
        return copy.deepcopy(self.put("services", namespace, copy.deepcopy(dict(service))))

    def list_objects(
        self,
        kind: Kind,
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        self._record(
            "list", kind, namespace, label_selector, limit=limit, continue_token=continue_token
        )
        if kind in self.refuse:
            raise self.refuse[kind]
        if continue_token:
            # The next page of a list: the rest of the snapshot the first page was served from.
            rv, items = self._pages.pop(continue_token)
        else:
            with self._lock:
                items = [
                    copy.deepcopy(o)
                    for (ns, _), o in self.store[kind].items()
                    if ns == namespace and _matches(o, label_selector)
                ]
                # A list is always served at a version the server still keeps.
                rv = max(self.rv, self.compacted)
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            token = uuid.uuid4().hex
            self._pages[token] = (rv, items[limit:])
            items, meta["continue"] = items[:limit], token
        return {"items": items, "metadata": meta}

    def list_events(self, namespace: str, field_selector: str) -> list[Obj]:
        self._record("list_events", namespace, field_selector)
        if "events" in self.refuse:
            raise self.refuse["events"]

        def field(obj: Obj, path: str) -> Any:
            for part in path.split("."):
                obj = obj.get(part) or {}
            return obj or ""

        terms = [t.partition("=")[::2] for t in field_selector.split(",")]
        with self._lock:
            return [
                copy.deepcopy(e)
                for (ns, _), e in self.store["events"].items()
                if ns == namespace and all(field(e, k) == v for k, v in terms)
            ]

    def watch(
        self,
        kind: Kind,
        namespace: str,
        label_selector: str | None,
        resource_version: str,
        *,
        timeout_seconds: int,
        read_timeout: float,
    ) -> FakeStream:
        self._record(
            "watch",
            kind,
            namespace,
            label_selector,
            resource_version,
            timeout_seconds=timeout_seconds,
            read_timeout=read_timeout,
        )
        if kind in self.refuse:
            raise self.refuse[kind]
        since = int(resource_version or 0)
        if since < self.compacted:
            raise ApiError("too old resource version", status=410, reason="Expired")
        stream = FakeStream(self, kind, namespace, label_selector)
        with self._lock:
            for rv, k, ns, etype, obj in self.history:
                if rv > since and k == kind and ns == namespace and _matches(obj, label_selector):
                    stream.push(json.dumps({"type": etype, "object": obj}))
            self.streams.append(stream)
        return stream

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool,
        since_seconds: int | None = None,
        tail_lines: int | None = None,
        timestamps: bool = True,
        read_timeout: float = 30.0,
    ) -> FakeStream:
        self._record("pod_log", namespace, pod, container, follow=follow, tail_lines=tail_lines)
        stream = FakeStream(self, "log", namespace, None)
        lines = self.logs.get((namespace, pod, container), [])
        if tail_lines is not None:
            lines = lines[-tail_lines:]
        for i, line in enumerate(lines):
            stamp = (self.clock.epoch + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            stream.push(f"{stamp} {line}" if timestamps else line)
        stream.end()
        return stream

    def list_nodes(self) -> list[Obj]:
        self._record("list_nodes")
        if self.nodes_forbidden:
            raise ForbiddenError("nodes is forbidden", status=403, reason="Forbidden")
        return copy.deepcopy(self.nodes)

    def list_nodepools(self) -> list[Obj]:
        self._record("list_nodepools")
        if self.nodepools is None:
            raise NotFoundError("the server could not find the requested resource", status=404)
        return copy.deepcopy(self.nodepools)

    def get_local_queue(self, namespace: str, name: str) -> Obj:
        self._record("get_local_queue", namespace, name)
        if "localqueues" in self.refuse:
            raise self.refuse["localqueues"]
        lq = self.store["localqueues"].get((namespace, name))
        if lq is None:
            raise NotFoundError(f'localqueues "{name}" not found', status=404, reason="NotFound")
        return copy.deepcopy(lq)

    def get_cluster_queue(self, name: str) -> Obj:
        self._record("get_cluster_queue", name)
        if "clusterqueues" in self.refuse:
            raise self.refuse["clusterqueues"]
        cq = self.store["clusterqueues"].get(("", name))
        if cq is None:
            raise NotFoundError(f'clusterqueues "{name}" not found', status=404, reason="NotFound")
        return copy.deepcopy(cq)

    def pending_workloads(self, namespace: str, local_queue: str) -> list[Obj]:
        self._record("pending_workloads", namespace, local_queue)
        if self.visibility is None:
            raise NotFoundError("the server could not find the requested resource", status=404)
        return copy.deepcopy(self.visibility.get((namespace, local_queue), []))

    def get_configmap(self, namespace: str, name: str) -> Obj:
        self._record("get_configmap", namespace, name)
        cm = self.configmaps.get((namespace, name))
        if cm is None:
            raise NotFoundError(f'configmaps "{name}" not found', status=404, reason="NotFound")
        return copy.deepcopy(cm)


class SyncWatchers(WatcherRegistry):
    """Watchers without threads, fed in the caller's thread from every change of the fake.

    Each watch of the watcher (its own Jobs and pods, and the set-based ones a subscription
    adds) is listed when it is new or its set grew, then fed every change its selector matches,
    as the server would. The reader of the Jobs' refusals runs as actions on the fake clock.
    """

    def __init__(self, kube: FakeKube, launcher: str | None = None) -> None:
        super().__init__(linger=0, launcher=launcher)
        self.kube = kube
        self.made: list[NamespaceWatcher] = []

    def acquire(  # type: ignore[override]
        self, api: Any, namespace: str, *, clock: Any = None, safety_interval: float | None = None
    ) -> NamespaceWatcher:
        for w in self.made:
            if w.namespace == namespace and not w.stopped:
                return w
        watcher = NamespaceWatcher(
            api, namespace, clock=clock or self.kube.clock, launcher=self.launcher
        )

        def sync() -> None:
            # What each watch's thread does: (re-)list a watch that is new or whose set grew.
            for state in watcher.states():
                if (
                    state.resource_version is None
                    or state.grew
                    or (state.selector() != state.listed_selector)
                ):
                    try:
                        watcher.relist(state.key)
                    except ApiError as e:
                        if not state.optional:
                            raise
                        state.failure = e
                        state.synced.set()

        def feed(kind: str, ns: str, line: str) -> None:
            if ns != namespace or watcher.stopped:
                return
            obj = json.loads(line)["object"]
            for state in watcher.states():
                listed = state.resource_version is not None
                if state.name == kind and listed and _matches(obj, state.listed_selector):
                    watcher.handle(state.key, line)

        subscribe = watcher.subscribe

        def subscribe_and_sync(job_name: str, job: Any = None) -> Any:
            sub = subscribe(job_name, job)
            sync()
            return sub

        watcher.subscribe = subscribe_and_sync  # type: ignore[method-assign]
        sync()
        self.kube.listeners.append(feed)

        fake_clock = clock or self.kube.clock

        def read_failed_creates() -> None:
            # What the reader's thread does, on the fake clock: a quarter second after its last
            # look while no step waits (a real one is woken at once), else when due.
            if watcher.stopped:
                return
            delay = watcher.failed_creates.tick()
            fake_clock.after(0.25 if delay is None else max(delay, 0.01), read_failed_creates)

        if hasattr(fake_clock, "after"):
            fake_clock.after(0.25, read_failed_creates)
        else:  # the real clock: the reader's own thread
            threading.Thread(target=watcher._read_failed_creates, daemon=True).start()
        self.made.append(watcher)
        return watcher

    def release(self, watcher: NamespaceWatcher) -> None:
        pass
