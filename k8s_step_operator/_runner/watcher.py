"""One shared, level-triggered view of the Jobs and pods of the steps a process follows.

``launch`` is synchronous, and a process may run hundreds of steps at once, each in its own thread.
Polling per step costs requests in proportion to steps x time and sees outcomes late; a watch per
step costs a connection per step. Instead each namespace gets one watcher per API access object:
two watch connections (Jobs, pods) whose events update in-memory caches and wake only the steps
whose objects changed. Steps recompute their state from the caches on every wake-up, so
duplicated or reordered events after a reconnect do no harm.

Many pipelines share a namespace, each launching its steps from a process of its own. A watch of
the whole namespace would make every process receive every other pipeline's events (and the API
server send each event once per process: N pipelines, N^2 events). So the watches are scoped to
what this process follows:

* the Jobs this process launched, and their pods: the runner labels each Job and its pod template
  with the launcher's id (``k8s-step-operator.io/launcher``), and the two watches select on it;
* Jobs another process launched (``attach``, a restarted caller that adopts its Job): watched by
  set-based selectors, the Jobs by their step run's label and their pods by their Job's uid
  (``in (...)``, up to 100 values per watch);
* Kueue's Workloads of queued steps: by their Job's uid (``kueue.x-k8s.io/job-uid in (...)``),
  started by the first step that has a queue.

Events carry no labels and a field selector takes one value per field, so no watch can select the
events of a set of steps. They are read on demand instead (``step_events``), only while a step
waits where they say why; the watcher holds the one ``FailedCreates`` reader its steps share, and
its thread lists them while any step waits for its pod, waking the steps whose Jobs they concern.

The watch rules followed here:

* list, then watch from the list's resourceVersion, with bookmarks, a server-side timeout and a
  client read timeout shorter than a minute, so a connection that goes silent (open, nothing
  flowing) is noticed within a minute and resumed;
* 410 Gone, as an error or as an ERROR event, re-lists and watches from the new version;
* connection failures (an API server restart) back off with jitter and resume from the last
  version seen;
* a watch resumes with the selector its cache was listed with: a set that grew re-lists at once,
  a set that shrank at the next reconnect;
* a refusal (401/403) is kept per watch: a re-list of one never clears another's;
* a slow periodic re-list of Jobs is a safety net against anything a watch may have missed.

Watchers are shared through a ``WatcherRegistry`` keyed by the API access object itself (never
by ``id()``, which Python reuses after garbage collection). Each operator owns its registry, and
the registry's launcher id; there is no process-wide one.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from k8s_step_operator._errors import ApiError
from k8s_step_operator._job.keys import (
    JOB_CONTROLLER_UID_LABEL,
    JOB_NAME_LABEL,
    KUEUE_JOB_UID_LABEL,
    KUEUE_QUEUE_LABEL,
    LABEL_LAUNCHER,
    LABEL_STEP_RUN_ID,
    LEGACY_JOB_NAME_LABEL,
    MANAGED_BY_SELECTOR,
)
from k8s_step_operator._objects import (
    Job,
    KubeObject,
    Pod,
    WatchLine,
    Workload,
    labels_of,
    resource_version_of,
)
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, Kind, KubeAccess, Stream
from k8s_step_operator._runner.step_events import FailedCreates

__all__ = [
    "NamespaceWatcher",
    "Subscription",
    "WatcherRegistry",
    "job_name_of_pod",
    "with_launcher",
]

log = logging.getLogger(__name__)

# Marks the records that say a watch is retried, so a console can collapse them by that mark.
RETRY_RECORD = {"k8sso_retry": True}

# Without a launcher: every Job of ours, and the pods of every Job.
POD_SELECTOR = JOB_CONTROLLER_UID_LABEL
JOB_SELECTOR = MANAGED_BY_SELECTOR
# Values of one set-based selector, so one watch per this many adopted or queued steps.
SET_SIZE = 100
# Items per page of a list: what is held in the server's full form at once.
LIST_PAGE = 500

# Deleted pods remembered per namespace (their last state), for the diagnosis of a failure.
_GONE_PODS = 512
# How long a watch that worked may be refused (401/403) before the steps are told: an API server
# that has just restarted refuses until its authorization caches are filled.
_REFUSAL_GRACE = 30.0
# The server ends each watch after this many seconds, and the client gives up on a connection
# silent for longer than SERVER_TIMEOUT + READ_SLACK: a dead connection is noticed within a
# minute even when the server sends no bookmarks (it promises none at any interval).
SERVER_TIMEOUT = 40
READ_SLACK = 15.0


Obj = TypeVar("Obj", bound=KubeObject)


def _newer_or_equal(a: KubeObject, b: KubeObject) -> bool:
    """Whether ``a``'s version is at least ``b``'s; etcd revisions are integers in practice."""
    try:
        return int(resource_version_of(a)) >= int(resource_version_of(b))
    except ValueError:
        return True


def _uid(obj: KubeObject) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


# Strings up to this long are shared between the cached objects that hold them: names, labels,
# reasons, timestamps repeat across thousands of Jobs and pods.
_SHARED_MAX = 64


def _shared(value: Any) -> Any:
    if type(value) is str and len(value) <= _SHARED_MAX:
        return sys.intern(value)
    return value


def _interned(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A decoded JSON object whose keys and short strings are shared with every other."""
    return {sys.intern(k): _shared(v) for k, v in pairs}


def _decode(line: str) -> Any:
    """A watch line, decoded with shared keys and short strings (``_interned``)."""
    return json.loads(line, object_pairs_hook=_interned)


def _share_keys(value: Any) -> Any:
    """A decoded object (from a list) rebuilt with shared keys and strings, as ``_decode``."""
    if isinstance(value, dict):
        return {sys.intern(k): _share_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_share_keys(v) for v in value]
    return _shared(value)


def _slim(kind: Kind, obj: KubeObject) -> None:
    """Drop, in place, what no reader of the cache needs; thousands of steps are cached.

    Server-side apply's bookkeeping goes from every object; a pod keeps the scalar fields of its
    spec (``nodeName``...) and its containers' names and images, not the rest of its containers,
    volumes or other structures (their states are in its status); a Job keeps its spec without
    its pod template (a step reads that from the Job it submitted or attached to).
    """
    raw = cast(dict[str, Any], obj)
    meta = raw.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "pods":
        slim = {k: v for k, v in spec.items() if not isinstance(v, dict | list)}
        for key in ("initContainers", "containers"):  # each one's name and image only
            if isinstance(spec.get(key), list):
                slim[key] = [
                    {k: c[k] for k in ("name", "image") if k in c}
                    for c in spec[key]
                    if isinstance(c, dict)
                ]
        raw["spec"] = slim
    elif kind == "jobs":
        spec.pop("template", None)


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


def _owner_uid(obj: KubeObject) -> str:
    """The uid of the Job that owns a pod (or a Workload), else ``""``."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return str(ref.get("uid", ""))
    labels = labels_of(obj)
    return str(labels.get(KUEUE_JOB_UID_LABEL) or labels.get(JOB_CONTROLLER_UID_LABEL) or "")


def with_launcher(job: Mapping[str, Any], launcher: str) -> dict[str, Any]:
    """A copy of a Job whose labels, and its pod template's, name the launcher that follows it.

    The launcher's watches select on that label: they see this Job and its pods, and no other
    process's.
    """
    out = dict(job)
    meta = dict(out.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), LABEL_LAUNCHER: launcher}
    out["metadata"] = meta
    spec = dict(out.get("spec") or {})
    template = dict(spec.get("template") or {})
    tmeta = dict(template.get("metadata") or {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), LABEL_LAUNCHER: launcher}
    template["metadata"] = tmeta
    spec["template"] = template
    out["spec"] = spec
    return out


@dataclass(eq=False)
class Subscription:
    """A step's interest in one Job; ``changed`` is set whenever anything about it changes.

    Attributes:
        job_name: The Job's name.
        changed: Set on every change to the Job, its pods or its Workload.
        members: What the watcher added to its set-based watches for this step (released on
            ``unsubscribe``): ``(set, value)`` pairs.
    """

    job_name: str
    changed: threading.Event = field(default_factory=threading.Event)
    members: tuple[tuple[str, str], ...] = ()


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): re-list."""


@dataclass(eq=False)
class _KindState(Generic[Obj]):
    """One watch: a resource kind, the selector it lists and watches with, and its cache.

    A fixed watch has ``label_selector``; a set-based one has ``members`` and builds its selector
    from them (``set_label in (...)``, after ``base``).
    """

    name: Kind
    label_selector: str | None
    key: str = ""
    objects: dict[str, Obj] = field(default_factory=dict)
    resource_version: str | None = None
    synced: threading.Event = field(default_factory=threading.Event)
    stream: Stream | None = None
    last_list: float = 0.0
    refused_since: float | None = None
    failure: ApiError | None = None  # a refusal no retry will fix, for this watch only
    optional: bool = False  # its refusal concerns only the steps that use it (Kueue's Workloads)
    members: set[str] | None = None
    set_label: str = ""
    base: str | None = None
    listed_selector: str | None = None  # the selector the cache was listed with
    grew: bool = False  # a member was added since the last list
    retired: bool = False

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    def selector(self) -> str | None:
        """The selector a list would use now."""
        if self.members is None:
            return self.label_selector
        term = f"{self.set_label} in ({','.join(sorted(self.members))})"
        return f"{self.base},{term}" if self.base else term

    def covers(self, obj: KubeObject) -> bool:
        """Whether the object is one the current selector asks for (set-based watches)."""
        if self.members is None:
            return True
        return labels_of(obj).get(self.set_label, "") in self.members


@dataclass
class _SetScope:
    """Set-based watches of one kind on one label, ``SET_SIZE`` values each."""

    name: Kind
    label: str
    base: str | None
    optional: bool = False
    chunks: list[_KindState[Any]] = field(default_factory=list)
    uses: dict[str, int] = field(default_factory=dict)  # value -> subscriptions that use it


class NamespaceWatcher:
    """Caches the Jobs and pods of one namespace that its steps need, kept current by watches.

    Args:
        api: The API access; the watcher owns no credentials of its own.
        namespace: The namespace to watch.
        clock: The clock (time-outs, back-off, the safety re-list).
        launcher: The launcher id its own Jobs and their pods carry (``with_launcher``);
            ``None``: every Job of ours in the namespace, and every Job's pods.
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
        launcher: str | None = None,
        server_timeout: int = SERVER_TIMEOUT,
        read_timeout_slack: float = READ_SLACK,
        safety_interval: float = 60.0,
        on_retry: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.api = api
        self.on_retry = on_retry
        self.namespace = namespace
        self.clock = clock
        self.launcher = launcher
        self._server_timeout = server_timeout
        self._read_timeout = server_timeout + read_timeout_slack
        self.safety_interval = safety_interval
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._started = False
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._deleted_jobs: dict[str, str] = {}  # name -> uid of a Job seen deleted
        # The last state of pods seen deleted, newest last: the Job controller deletes the rank
        # that failed a step on several nodes (and its other ranks) within a second, and the
        # diagnosis still names it.
        self._gone_pods: OrderedDict[str, Pod] = OrderedDict()
        # The caches as the steps read them: pods and Workloads by their Job's uid.
        self._pods_by_job: dict[str, dict[str, Pod]] = defaultdict(dict)
        self._workload_by_job: dict[str, Workload] = {}
        own = f"{LABEL_LAUNCHER}={launcher}" if launcher else None
        self._jobs = _KindState[Job]("jobs", f"{JOB_SELECTOR},{own}" if own else JOB_SELECTOR)
        self._pods = _KindState[Pod]("pods", own or POD_SELECTOR)
        # Every watch by its key; the set-based ones come and go with their members.
        self._kinds: dict[str, _KindState[Any]] = {"jobs": self._jobs, "pods": self._pods}
        self._scopes = {
            "jobs": _SetScope("jobs", LABEL_STEP_RUN_ID, JOB_SELECTOR),
            "pods": _SetScope("pods", JOB_CONTROLLER_UID_LABEL, None),
            "workloads": _SetScope("workloads", KUEUE_JOB_UID_LABEL, None, optional=True),
        }
        self._threads: list[threading.Thread] = []
        self.failed_creates = FailedCreates(api, namespace, clock, notify=self._notify_locked)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the watch threads and the safety net; returns at once."""
        with self._lock:
            self._started = True
            kinds = list(self._kinds.values())
        for kind in kinds:
            self._start_thread(kind)
        for target, name in (
            (self._safety_net, f"relist-{self.namespace}"),
            (self._read_failed_creates, f"events-{self.namespace}"),
        ):
            t = threading.Thread(target=target, name=name)
            t.daemon = True
            t.start()
            self._threads.append(t)

    def _start_thread(self, kind: _KindState[Any]) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        t = threading.Thread(
            target=self._run, args=(kind,), name=f"watch-{kind.key}-{self.namespace}"
        )
        t.daemon = True
        t.start()
        self._threads.append(t)

    @property
    def workloads_unavailable(self) -> ApiError | None:
        """Why Workloads cannot be watched (404: Kueue is not installed; 403), else ``None``."""
        for kind in list(self._scopes["workloads"].chunks):
            if kind.failure is not None:
                return kind.failure
        return None

    def workload_of(self, job_uid: str) -> Workload | None:
        """The cached Kueue Workload of the Job with this uid, or ``None``."""
        with self._lock:
            return self._workload_by_job.get(job_uid)

    def stop(self) -> None:
        """Stop every thread and close the watch connections."""
        self._stopped.set()
        self.failed_creates.wake.set()
        with self._lock:
            kinds = list(self._kinds.values())
        for kind in kinds:
            self._close(kind)
        for t in self._threads:
            t.join(timeout=5)

    @property
    def stopped(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stopped.is_set()

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every watch has listed once (since its set last grew)."""
        deadline = self.clock.monotonic() + timeout
        with self._lock:
            kinds = list(self._kinds.values())
        return all(
            self.clock.wait(k.synced, max(0.0, deadline - self.clock.monotonic())) for k in kinds
        )

    @property
    def failure(self) -> ApiError | None:
        """A refusal (401/403) of any watch that outlasted the grace, else ``None``."""
        with self._lock:
            kinds = list(self._kinds.values())
        for kind in kinds:
            if kind.failure is not None and not kind.optional:
                return kind.failure
        return None

    def states(self) -> list[_KindState[Any]]:
        """Every watch now (the fixed ones and the set-based ones)."""
        with self._lock:
            return list(self._kinds.values())

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, job_name: str, job: Job | None = None) -> Subscription:
        """Register interest in a Job; the subscription fires on any change to it or its pods.

        Args:
            job_name: The Job's name.
            job: The Job as the server has it (its uid and labels), when known: a Job another
                launcher labelled is added to the set-based watches, and so is a queued Job's
                Workload. ``None``: the Job is this launcher's, with no queue.
        """
        members: list[tuple[str, str]] = []
        if job is not None:
            labels, uid = labels_of(job), _uid(job)
            if self.launcher is not None and labels.get(LABEL_LAUNCHER) != self.launcher:
                step_run = labels.get(LABEL_STEP_RUN_ID)
                if step_run:
                    members.append(("jobs", step_run))
                if uid:
                    members.append(("pods", uid))
            if labels.get(KUEUE_QUEUE_LABEL) and uid:
                members.append(("workloads", uid))
        sub = Subscription(job_name, members=tuple(members))
        with self._lock:
            self._subs[job_name].add(sub)
            for scope, value in members:
                self._add_member(self._scopes[scope], value)
        sub.changed.set()  # evaluate once at once, with whatever is cached
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Drop a subscription."""
        with self._lock:
            subs = self._subs.get(sub.job_name)
            if subs is not None and sub in subs:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_name]
                for scope, value in sub.members:
                    self._remove_member(self._scopes[scope], value)

    def _add_member(self, scope: _SetScope, value: str) -> None:
        scope.uses[value] = scope.uses.get(value, 0) + 1
        if scope.uses[value] > 1:
            return
        chunk = next(
            (k for k in scope.chunks if k.members is not None and len(k.members) < SET_SIZE),
            None,
        )
        if chunk is None:
            chunk = _KindState[Any](
                scope.name,
                None,
                key=f"{scope.name}-set-{uuid.uuid4().hex[:6]}",
                optional=scope.optional,
                members=set(),
                set_label=scope.label,
                base=scope.base,
            )
            scope.chunks.append(chunk)
            self._kinds[chunk.key] = chunk
            chunk.members = {value}
            if self._started and not self._stopped.is_set():
                self._start_thread(chunk)
            return
        assert chunk.members is not None
        chunk.members.add(value)
        chunk.grew = True
        chunk.synced.clear()
        self._close(chunk)  # its thread re-lists with the new member

    def _remove_member(self, scope: _SetScope, value: str) -> None:
        left = scope.uses.get(value, 0) - 1
        if left > 0:
            scope.uses[value] = left
            return
        scope.uses.pop(value, None)
        for chunk in list(scope.chunks):
            if chunk.members is None or value not in chunk.members:
                continue
            # Kept in the selector until the next re-list; a chunk left empty stops now.
            chunk.members.discard(value)
            if not chunk.members:
                scope.chunks.remove(chunk)
                del self._kinds[chunk.key]
                chunk.retired = True
                chunk.synced.set()  # nobody waits for it any more
                self._close(chunk)
                for obj in chunk.objects.values():
                    self._unindex(chunk, obj)
                chunk.objects = {}

    def _notify(self, job_name: str) -> None:
        for sub in self._subs.get(job_name, ()):
            sub.changed.set()

    def _notify_locked(self, job_name: str) -> None:
        with self._lock:
            self._notify(job_name)

    def _notify_all(self) -> None:
        with self._lock:
            for subs in self._subs.values():
                for sub in subs:
                    sub.changed.set()

    # -- queries -------------------------------------------------------------------------

    def job(self, name: str) -> Job | None:
        """The cached Job (without its pod template), or ``None``."""
        with self._lock:
            found = self._jobs.objects.get(name)
            if found is None:
                for chunk in self._scopes["jobs"].chunks:
                    found = chunk.objects.get(name)
                    if found is not None:
                        break
            return found

    def was_deleted(self, name: str, uid: str) -> bool:
        """Whether the Job with this uid was seen deleted (or vanished from a fresh list)."""
        with self._lock:
            return self._deleted_jobs.get(name) == uid

    def pods_of(self, job_uid: str) -> list[Pod]:
        """The cached pods owned by the Job with this uid, oldest first."""
        with self._lock:
            pods = list(self._pods_by_job.get(job_uid, {}).values())
        return sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))

    def gone_pods_of(self, job_uid: str) -> list[Pod]:
        """The last state of the Job's pods seen deleted (the newest few), oldest first."""
        with self._lock:
            pods = [
                p
                for p in self._gone_pods.values()
                if any(
                    r.get("uid") == job_uid for r in (p["metadata"].get("ownerReferences") or [])
                )
            ]
        return sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))

    def remember_job(self, job: Job) -> None:
        """Put a Job we just created or read into the cache, unless a newer one is there."""
        name = job["metadata"]["name"]
        job = cast(Job, _share_keys(job))
        _slim("jobs", job)
        with self._lock:
            kind: _KindState[Job] = self._jobs
            if self.launcher is not None and labels_of(job).get(LABEL_LAUNCHER) != self.launcher:
                # Another launcher's Job: into the set-based watch that lists it, if one does.
                kind = next((c for c in self._scopes["jobs"].chunks if c.covers(job)), kind)
            cached = kind.objects.get(name)
            if cached is None or not _newer_or_equal(cached, job):
                kind.objects[name] = job
            self._deleted_jobs.pop(name, None)
            self._notify(name)

    # -- the index of pods and Workloads by their Job -------------------------------------------

    def _index(self, kind: _KindState[Any], obj: KubeObject) -> None:
        if kind.name == "pods":
            owner = _owner_uid(obj)
            if owner:
                self._pods_by_job[owner][obj["metadata"]["name"]] = cast(Pod, obj)
        elif kind.name == "workloads":
            owner = _owner_uid(obj)
            if owner:
                self._workload_by_job[owner] = cast(Workload, obj)

    def _unindex(self, kind: _KindState[Any], obj: KubeObject) -> None:
        owner = _owner_uid(obj)
        if not owner:
            return
        if kind.name == "pods":
            pods = self._pods_by_job.get(owner)
            if pods is not None:
                pods.pop(obj["metadata"]["name"], None)
                if not pods:
                    del self._pods_by_job[owner]
        elif kind.name == "workloads":
            wl = self._workload_by_job.get(owner)
            if wl is not None and wl["metadata"].get("name") == obj["metadata"].get("name"):
                del self._workload_by_job[owner]

    # -- the watch loop ----------------------------------------------------------------------

    def _run(self, kind: _KindState[Obj]) -> None:
        failures = 0
        while not self._stopped.is_set() and not kind.retired:
            try:
                with self._lock:  # a set's members change under the lock
                    stale = (
                        kind.resource_version is None
                        or kind.grew
                        or kind.selector() != kind.listed_selector
                    )
                if stale:
                    self._relist(kind)
                self._watch_once(kind)
                failures = 0
            except _Gone:
                log.info("watch of %s in %s expired (410); re-listing", kind.name, self.namespace)
                kind.resource_version = None
            except Exception as e:  # a watch thread never dies while the watcher runs
                if self._stopped.is_set() or kind.retired:
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

    def relist(self, key: str) -> None:
        """List one watch's objects and replace its cache; wakes the steps whose objects changed."""
        self._relist(self._kinds[key])

    def _pages(self, name: Kind, selector: str | None) -> Iterator[tuple[list[Any], str]]:
        """A list in pages of ``LIST_PAGE`` items, each with the list's version.

        A page is made compact before the next is read: thousands of steps' objects are never
        all in memory at once in the server's full form.
        """
        token: str | None = None
        while True:
            listed = self.api.list_objects(
                name, self.namespace, selector, limit=LIST_PAGE, continue_token=token
            )
            meta = listed.get("metadata", {})
            yield list(listed.get("items") or []), str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            if not token:
                return

    def _relist(self, kind: _KindState[Obj]) -> None:
        with self._lock:
            selector = kind.selector()
            kind.grew = False
        fresh: dict[str, Obj] = {}
        version = ""
        for items, page_version in self._pages(kind.name, selector):
            version = page_version  # every page is of the first one's snapshot
            for item in items:
                name = item["metadata"]["name"]
                cached = kind.objects.get(name)
                if cached is not None and resource_version_of(cached) == resource_version_of(item):
                    fresh[name] = cached  # unchanged: keep the compact copy
                    continue
                item = _share_keys(item)
                _slim(kind.name, item)
                fresh[name] = item
        with self._lock:
            if kind.retired:
                return
            touched: set[str] = set()
            for obj_name, old in kind.objects.items():
                if obj_name not in fresh:
                    self._unindex(kind, old)
                    if kind.covers(old):  # gone, not merely no longer asked for
                        touched.add(self._job_name_for(kind, old))
                        if kind.name == "jobs":
                            self._deleted_jobs[obj_name] = _uid(old)
            for obj_name, obj in fresh.items():
                before = kind.objects.get(obj_name)
                self._index(kind, obj)
                if kind.name == "jobs":
                    self._deleted_jobs.pop(obj_name, None)
                if before is None or resource_version_of(before) != resource_version_of(obj):
                    touched.add(self._job_name_for(kind, obj))
            kind.objects = fresh
            kind.listed_selector = selector
            kind.resource_version = version
            kind.last_list = self.clock.monotonic()
            for job_name in touched:
                self._notify(job_name)
        if not kind.grew:
            kind.synced.set()
        self._accepted(kind)

    def watch_once(self, key: str) -> None:
        """Watch one watch's kind from its last version until the server or the client ends it.

        Raises:
            _Gone: The version is too old (410): the caller re-lists.
            ApiError: The watch failed; the caller backs off and resumes.
        """
        self._watch_once(self._kinds[key])

    def _watch_once(self, kind: _KindState[Obj]) -> None:
        try:
            stream = self.api.watch(
                kind.name,
                self.namespace,
                kind.listed_selector,
                kind.resource_version or "",
                timeout_seconds=self._server_timeout,
                read_timeout=self._read_timeout,
            )
        except ApiError as e:
            if e.status == 410:
                raise _Gone() from e
            raise
        kind.stream = stream
        # Closed meanwhile (stopped, or its set grew): end now, and let the loop decide.
        if self._stopped.is_set() or kind.grew or kind.retired:
            self._close(kind)
        try:
            for line in self._lines(stream):
                self._handle(kind, line)
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

    def handle(self, key: str, line: str) -> None:
        """Apply one watch event (a JSON line) of one watch to its cache; wake the steps."""
        self._handle(self._kinds[key], line)

    def _handle(self, kind: _KindState[Obj], line: str) -> None:
        event: WatchLine[KubeObject] = _decode(line)
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
        obj = cast(Obj, event.get("object") or {})
        rv = resource_version_of(obj)
        if etype == "BOOKMARK":
            kind.resource_version = rv or kind.resource_version
            return
        _slim(kind.name, obj)
        with self._lock:
            if kind.retired:
                return
            if rv:
                kind.resource_version = rv
            obj_name = obj["metadata"]["name"]
            if etype == "DELETED":
                old = kind.objects.pop(obj_name, None)
                self._unindex(kind, old or obj)
                if kind.name == "jobs":
                    self._deleted_jobs[obj_name] = _uid(obj)
                elif kind.name == "pods":
                    self._gone_pods[obj_name] = cast(Pod, obj)
                    while len(self._gone_pods) > _GONE_PODS:
                        self._gone_pods.popitem(last=False)
            else:
                before = kind.objects.get(obj_name)
                if before is not None and _owner_uid(before) != _owner_uid(obj):
                    self._unindex(kind, before)
                kind.objects[obj_name] = obj
                self._index(kind, obj)
                if kind.name == "jobs":
                    self._deleted_jobs.pop(obj_name, None)
            self._notify(self._job_name_for(kind, obj))

    def _job_name_for(self, kind: _KindState[Obj], obj: KubeObject) -> str:
        if kind.name == "jobs":
            return str(obj["metadata"]["name"])
        return job_name_of_pod(obj)  # a pod's or a Workload's owning Job

    def _read_failed_creates(self) -> None:
        """The one reader of the Jobs' refusals, while any step waits for its pod."""
        reader = self.failed_creates
        while not self._stopped.is_set():
            reader.wake.clear()
            try:
                delay = reader.tick()
            except Exception:  # the reader never dies while the watcher runs
                log.exception("reading the Jobs' events in %s failed", self.namespace)
                delay = 10.0
            # Nothing due while no step waits: a step that begins to wait wakes the reader.
            self.clock.wait(reader.wake, 3600.0 if delay is None else delay)

    def _safety_net(self) -> None:
        while not self.clock.wait(self._stopped, min(self.safety_interval, 5.0)):
            self.safety_relist()

    def safety_relist(self) -> None:
        """Re-list Jobs if the last list is older than the safety interval."""
        with self._lock:
            kinds = [self._jobs, *self._scopes["jobs"].chunks]
        for jobs in kinds:
            if self.clock.monotonic() - jobs.last_list < self.safety_interval:
                continue
            if jobs.listed_selector is None:
                continue  # not listed yet: its own thread lists it
            try:
                for items, _ in self._pages("jobs", jobs.listed_selector):
                    with self._lock:
                        for item in items:
                            item_name = item["metadata"]["name"]
                            cached = jobs.objects.get(item_name)
                            if cached is None or not _newer_or_equal(cached, item):
                                item = _share_keys(item)
                                _slim("jobs", item)
                                jobs.objects[item_name] = item
                                self._notify(item_name)
            except ApiError as e:
                log.debug("safety re-list of jobs in %s failed: %s", self.namespace, e)
                continue
            with self._lock:
                jobs.last_list = self.clock.monotonic()


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
        launcher: The id its watchers select their own Jobs by (``None``: a new random one).
            The runner labels each Job it submits with it (``with_launcher``).
    """

    def __init__(
        self,
        linger: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
        on_retry: Callable[[str, str, float], None] | None = None,
        launcher: str | None = None,
    ) -> None:
        self.linger = linger
        self.clock = clock
        self.on_retry = on_retry
        self.launcher = launcher or uuid.uuid4().hex[:16]
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
                        api,
                        namespace,
                        clock=clock or self.clock,
                        launcher=self.launcher,
                        on_retry=self.on_retry,
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
