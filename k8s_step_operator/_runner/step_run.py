"""Submits one step's Job, follows it to its end, and never leaves it behind.

The synchronous contract of ``launch`` is kept by ``StepRun.run``: submit idempotently (a restarted
caller reattaches to its Job instead of starting a second one), wait on the shared namespace
watcher, name each phase as it is entered, apply each phase's bound, stream the step's output, and
turn the outcome into one of our errors. An interrupt (Ctrl-C or SIGTERM) deletes the Job with
background propagation and waits until none of its pods is left before re-raising, so no GPU stays
held by a caller that is gone. Jobs that finish are deleted by their TTL, after the logs are read.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar

from kubernetes import client as k8s

from k8s_step_operator._errors import (
    ApiError,
    ConflictError,
    DeletedExternallyError,
    ForbiddenError,
    NameCollisionError,
    NotFoundError,
    StepCancelledError,
    StepError,
)
from k8s_step_operator._job.naming import same_step
from k8s_step_operator._kube.client import call, read_json
from k8s_step_operator._runner.diagnosis import (
    Limits,
    Observation,
    Phase,
    Problem,
    Timers,
    decide,
    fits_somewhere,
    observe,
    outcome_error,
)
from k8s_step_operator._runner.logs import TAIL_LINES, LogFollower
from k8s_step_operator._runner.watcher import NamespaceWatcher, acquire_watcher, release_watcher

__all__ = ["RunOptions", "StepRun", "job_status"]

log = logging.getLogger("k8s_step_operator")

# How long the outcome may wait for the failed pod's exit code to reach the cache.
_EXIT_CODE_GRACE = 2.0
_TICK = 1.0


@dataclass(frozen=True)
class RunOptions:
    """How a step run is followed; built from the operator's settings."""

    limits: Limits = field(default_factory=Limits)
    stream_logs: bool = True
    preflight_fit_check: bool = True
    delete_on_cancel: bool = True
    safety_poll_interval: float = 60.0
    cancel_wait_timeout: float = 120.0
    log_drain_timeout: float = 10.0


class _NodeView:
    """A short-lived cache of the cluster's nodes for the preflight fit check, shared per client.

    Reading nodes needs a ClusterRole many admins will not grant: without it the check is skipped,
    and that is said once per process, not once per step.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _cache: ClassVar[dict[int, tuple[float, list[dict[str, Any]] | None]]] = {}
    _warned: ClassVar[bool] = False
    TTL: ClassVar[float] = 10.0

    @classmethod
    def nodes(cls, api_client: k8s.ApiClient) -> list[dict[str, Any]] | None:
        key = id(api_client)
        with cls._lock:
            cached = cls._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < cls.TTL:
                return cached[1]
            try:
                resp = call(
                    "list nodes",
                    k8s.CoreV1Api(api_client).list_node,
                    _preload_content=False,
                    _request_timeout=(10, 30),
                    budget=10,
                )
                nodes: list[dict[str, Any]] | None = list(read_json(resp).get("items") or [])
            except ForbiddenError:
                if not cls._warned:
                    log.warning(
                        "no read access to nodes: skipping the preflight fit check; an "
                        "unschedulable step fails after its pending timeout instead"
                    )
                    cls._warned = True
                nodes = None
            cls._cache[key] = (time.monotonic(), nodes)
            return nodes


class StepRun:
    """One step's Job from submission to its end.

    Args:
        api_client: The API client.
        job: The Job to submit, as built by the builder.
        run_id: The pipeline run's id; with ``step_name``, says which Job is ours.
        step_name: The step's name; a Job found under the same name is adopted only if its
            annotations name the same run and step.
        options: How to follow the step.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        job: Mapping[str, Any],
        *,
        run_id: str,
        step_name: str,
        options: RunOptions | None = None,
    ) -> None:
        self.api_client = api_client
        self.job = dict(job)
        self.name = str(job["metadata"]["name"])
        self.namespace = str(job["metadata"]["namespace"])
        self.run_id = run_id
        self.step_name = step_name
        self.options = options or RunOptions()
        self.uid = ""
        self.batch = k8s.BatchV1Api(api_client)
        self.step_log = logging.getLogger(f"{log.name}.step")
        self.phase: Phase | None = None

    @property
    def where(self) -> str:
        """``namespace/name`` of the Job."""
        return f"{self.namespace}/{self.name}"

    # -- submit --------------------------------------------------------------------------

    def submit(self) -> dict[str, Any]:
        """Create the Job, or adopt the one already there for the same run and step.

        Returns:
            The Job as the server has it.

        Raises:
            NameCollisionError: A Job of that name belongs to another run or step.
            ApiError: The server refused the Job.
        """
        try:
            created = call(
                f"create Job {self.where}",
                self.batch.create_namespaced_job,
                self.namespace,
                self.job,
                _preload_content=False,
            )
            job: dict[str, Any] = read_json(created)
            log.info("step %s: submitted Job %s", self.step_name, self.where)
        except ConflictError:
            # Also the path after a create whose answer was lost (a 5xx, a cut connection):
            # the retry meets our own Job and adopts it.
            job = self.get()
            if not same_step(job, self.run_id, self.step_name):
                raise NameCollisionError(
                    f"Job {self.where} exists but belongs to another run or step "
                    f"({(job.get('metadata') or {}).get('annotations')})",
                    status=409,
                    reason="AlreadyExists",
                    operation=f"create Job {self.where}",
                ) from None
            log.info("step %s: reattached to existing Job %s", self.step_name, self.where)
        self.uid = str(job["metadata"]["uid"])
        return job

    def get(self) -> dict[str, Any]:
        """Read the Job from the server."""
        resp = call(
            f"get Job {self.where}",
            self.batch.read_namespaced_job,
            self.name,
            self.namespace,
            _preload_content=False,
        )
        job: dict[str, Any] = read_json(resp)
        return job

    # -- wait ----------------------------------------------------------------------------

    def wait(self) -> None:
        """Follow the submitted Job until it ends.

        Raises:
            StepError: The step did not succeed; the subclass says why.
        """
        watcher = acquire_watcher(
            self.api_client, self.namespace, safety_interval=self.options.safety_poll_interval
        )
        sub = watcher.subscribe(self.name)
        follower: LogFollower | None = None
        if self.options.stream_logs:
            follower = LogFollower(
                self.api_client,
                self.namespace,
                self.step_log,
                container_done=lambda pod, c: self._container_done(watcher, pod, c),
            )
        try:
            self._wait(watcher, sub.wait, follower)
        finally:
            if follower is not None:
                follower.stop()
            watcher.unsubscribe(sub)
            release_watcher(watcher)

    def _wait(
        self,
        watcher: NamespaceWatcher,
        wait_for_change: Callable[[float], bool],
        follower: LogFollower | None,
    ) -> None:
        timers = Timers()
        phase_since = time.monotonic()
        missing_since: float | None = None
        failed_at: float | None = None
        last_summary = ""
        while True:
            wait_for_change(_TICK)
            now = time.monotonic()
            if watcher.failure is not None:
                raise watcher.failure
            job = watcher.job(self.name)
            if job is None or job["metadata"].get("uid") != self.uid:
                if watcher.was_deleted(self.name, self.uid):
                    raise DeletedExternallyError(
                        "the Job was deleted before it finished", **self._facts(follower)
                    )
                # Not in the cache (yet): after a while, ask the server directly.
                missing_since = missing_since or now
                if now - missing_since > 5.0:
                    job = self._get_or_deleted(follower)
                    watcher.remember_job(job)
                    missing_since = None
                else:
                    continue
            pods = watcher.pods_of(self.uid)
            if follower is not None:
                follower.update(pods)
            events = watcher.events_for(self.name, *(p["metadata"]["name"] for p in pods))
            obs = observe(job, pods, events)
            if obs.phase is not self.phase:
                self.phase, phase_since = obs.phase, now
                if obs.phase is not Phase.SUCCEEDED:  # success has its own line below
                    self._log_phase(obs)
            elif obs.summary != last_summary and obs.problem is not None:
                self._log_phase(obs)
            last_summary = obs.summary
            if obs.outcome is not None:
                if obs.outcome.succeeded:
                    self._drain(follower, pods)
                    log.info("step %s: succeeded (Job %s)", self.step_name, self.where)
                    return
                if obs.outcome.exit_code is None and obs.outcome.reason != "DeadlineExceeded":
                    # The Job's verdict can arrive before the pod's exit code reaches the cache.
                    failed_at = failed_at or now
                    if now - failed_at < _EXIT_CODE_GRACE:
                        continue
                self._drain(follower, pods)
                facts = self._facts(follower)
                if follower is None and obs.outcome.pod:
                    facts["log_tail"] = self._log_tail(obs.outcome.pod, obs.outcome.container)
                raise outcome_error(obs.outcome, **facts)
            seen = timers.track(obs.problem, now)
            if obs.problem is None and obs.phase in (Phase.SCHEDULING, Phase.QUEUED):
                seen = now - phase_since
            never_fits = obs.problem is Problem.UNSCHEDULABLE and self._never_fits(job)
            error = decide(
                obs,
                seen,
                self.options.limits,
                never_fits=never_fits,
                job=self.name,
                namespace=self.namespace,
            )
            if error is not None:
                log.error("step %s: %s; deleting Job %s", self.step_name, error, self.where)
                self._delete(wait=True, watcher=watcher)
                raise error

    def _log_phase(self, obs: Observation) -> None:
        level = logging.WARNING if obs.problem is not None else logging.INFO
        log.log(level, "step %s: %s - %s", self.step_name, obs.phase.value, obs.summary)

    def _facts(self, follower: LogFollower | None) -> dict[str, Any]:
        facts: dict[str, Any] = {"job": self.name, "namespace": self.namespace}
        if follower is not None:
            facts["log_tail"] = follower.last_lines()
        return facts

    def _log_tail(self, pod: str, container: str) -> list[str]:
        """The last lines of a container's log, read once (when logs were not streamed)."""
        try:
            resp = call(
                f"logs of pod {self.namespace}/{pod}",
                k8s.CoreV1Api(self.api_client).read_namespaced_pod_log,
                pod,
                self.namespace,
                container=container or None,
                tail_lines=TAIL_LINES,
                _preload_content=False,
                budget=10,
            )
            text = resp.data.decode("utf-8", "replace")
            resp.release_conn()
        except ApiError as e:
            log.debug("no log tail for %s: %s", pod, e)
            return []
        lines: list[str] = text.splitlines()
        return lines[-TAIL_LINES:]

    def _get_or_deleted(self, follower: LogFollower | None) -> dict[str, Any]:
        try:
            job = self.get()
        except NotFoundError:
            raise DeletedExternallyError(
                "the Job was deleted before it finished", **self._facts(follower)
            ) from None
        if job["metadata"].get("uid") != self.uid:
            raise DeletedExternallyError(
                "the Job was deleted and another took its name", **self._facts(follower)
            )
        return job

    def _container_done(self, watcher: NamespaceWatcher, pod: str, container: str) -> bool:
        for p in watcher.pods_of(self.uid):
            if p["metadata"]["name"] != pod:
                continue
            status = p.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                return True
            for cs in list(status.get("initContainerStatuses") or []) + list(
                status.get("containerStatuses") or []
            ):
                if cs.get("name") == container and (cs.get("state") or {}).get("terminated"):
                    return True
            return False
        return True  # the pod is gone: nothing more will come

    def _drain(self, follower: LogFollower | None, pods: list[dict[str, Any]]) -> None:
        if follower is not None:
            follower.drain(pods, self.options.log_drain_timeout)

    def _never_fits(self, job: Mapping[str, Any]) -> bool:
        if not self.options.preflight_fit_check:
            return False
        nodes = _NodeView.nodes(self.api_client)
        if nodes is None:
            return False
        pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        fits, reasons = fits_somewhere(pod_spec, nodes)
        if not fits:
            log.debug("no node fits Job %s: %s", self.where, "; ".join(reasons))
        return not fits

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, watcher: NamespaceWatcher | None = None) -> None:
        """Delete the Job with background propagation and wait until none of its pods is left."""
        self._delete(wait=True, watcher=watcher)

    def _delete(self, *, wait: bool, watcher: NamespaceWatcher | None) -> None:
        if not self.options.delete_on_cancel:
            log.warning("leaving Job %s in place (delete_on_cancel is off)", self.where)
            return
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if self.uid:
            body["preconditions"] = {"uid": self.uid}
        # Not found: gone already. Conflict: the name now holds someone else's Job.
        with contextlib.suppress(NotFoundError, ConflictError):
            call(
                f"delete Job {self.where}",
                self.batch.delete_namespaced_job,
                self.name,
                self.namespace,
                body=body,
            )
        if not wait or not self.uid:
            return
        own = watcher is None
        w = watcher or acquire_watcher(self.api_client, self.namespace)
        try:
            w.wait_synced(10)
            deadline = time.monotonic() + self.options.cancel_wait_timeout
            sub = w.subscribe(self.name)
            try:
                while w.pods_of(self.uid):
                    if time.monotonic() > deadline:
                        log.error(
                            "pods of Job %s still present after %.0fs",
                            self.where,
                            self.options.cancel_wait_timeout,
                        )
                        return
                    sub.wait(_TICK)
            finally:
                w.unsubscribe(sub)
        finally:
            if own:
                release_watcher(w)
        log.info("Job %s deleted; no pod of it is left", self.where)

    # -- the synchronous whole -------------------------------------------------------------

    def run(self) -> None:
        """Submit, wait, and clean up on interrupt; the synchronous form ``launch`` uses.

        Raises:
            StepError: The step did not succeed.
            KeyboardInterrupt: Re-raised after the Job and its pods were deleted.
        """
        with _sigterm_raises() as terminated:
            try:
                self.submit()
                try:
                    self.wait()
                except StepError:
                    raise  # the Job ended, or was deleted on the way out
                except Exception:
                    # Nobody would follow the Job any more: do not leave it holding GPUs.
                    log.exception("error while following Job %s; deleting it", self.where)
                    with contextlib.suppress(Exception):
                        self.cancel()
                    raise
                return
            except (KeyboardInterrupt, _Terminated) as e:
                interrupt: BaseException = e
                log.warning(
                    "step %s interrupted: deleting Job %s and waiting for its pods",
                    self.step_name,
                    self.where,
                )
                with _signals_deferred():
                    if not self.uid:
                        self._adopt_for_cancel()
                    self.cancel()
        if terminated.is_set():
            # The handler in force before is back: deliver SIGTERM to it (by default: exit).
            signal.raise_signal(signal.SIGTERM)
            raise StepCancelledError(
                "terminated by SIGTERM", job=self.name, namespace=self.namespace
            ) from None
        raise interrupt

    def _adopt_for_cancel(self) -> None:
        with contextlib.suppress(StepError, NotFoundError):
            job = self.get()
            if same_step(job, self.run_id, self.step_name):
                self.uid = str(job["metadata"]["uid"])


class _Terminated(BaseException):
    """SIGTERM arrived while a step was being followed."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[threading.Event]:
    """Within the block, SIGTERM interrupts the main thread like Ctrl-C does.

    Signal handlers can only be set from the main thread; elsewhere the block changes nothing
    and the caller's own handling applies.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.set()
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore a second Ctrl-C or SIGTERM while the Job is being deleted, so cleanup completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def job_status(api_client: k8s.ApiClient, namespace: str, name: str) -> Observation | None:
    """The current observation of a Job, read directly (for the non-blocking API).

    Returns:
        ``None`` when the Job does not exist.
    """
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    try:
        job = read_json(
            call(
                f"get Job {namespace}/{name}",
                batch.read_namespaced_job,
                name,
                namespace,
                _preload_content=False,
            )
        )
    except NotFoundError:
        return None
    uid = job["metadata"]["uid"]
    pods = (
        read_json(
            call(
                f"list pods of Job {namespace}/{name}",
                core.list_namespaced_pod,
                namespace,
                label_selector=f"batch.kubernetes.io/controller-uid={uid}",
                _preload_content=False,
            )
        ).get("items")
        or []
    )
    return observe(job, pods)
