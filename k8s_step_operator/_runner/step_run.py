"""Submits one step's Job, follows it to its end, and never leaves it behind.

The synchronous contract of ``launch`` is kept by ``StepRun.run``: submit idempotently (a restarted
caller reattaches to its Job instead of starting a second one), wait on the shared namespace
watcher, name each phase as it is entered, apply each phase's bound, stream the step's output, and
turn the outcome into one of our errors. An interrupt (Ctrl-C, SIGTERM or SIGHUP) deletes the Job
with background propagation and waits until none of its pods is left before re-raising, so no GPU
stays held by a caller that is gone; a failure of that clean-up is logged and never replaces the
interrupt. Jobs that finish are deleted by their TTL, after the logs are read.

Everything the runner needs from the outside comes in as parameters: the API access, the clock,
the watcher registry and the node view. Unit tests pass in-memory fakes of each.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, cast

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
from k8s_step_operator._job.keys import JOB_CONTROLLER_UID_LABEL, KUEUE_QUEUE_LABEL
from k8s_step_operator._job.naming import same_step
from k8s_step_operator._job.settings import KubernetesJobStepOperatorSettings
from k8s_step_operator._runner.autoscaler import AutoscalerView, nodepools_admitting
from k8s_step_operator._runner.diagnosis import (
    Observation,
    Phase,
    Problem,
    QueueContext,
    Timers,
    decide,
    observe,
    outcome_error,
)
from k8s_step_operator._runner.fit import FitVerdict, check_fit
from k8s_step_operator._runner.kueue import QueueView, WorkloadState, read_workload
from k8s_step_operator._runner.logs import TAIL_LINES, LogFollower
from k8s_step_operator._runner.pods import container_state, pod_finished
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, KubeAccess
from k8s_step_operator._runner.watcher import WATCHERS, NamespaceWatcher, WatcherRegistry

__all__ = ["NodeView", "StepIdentity", "StepRun", "job_status"]

log = logging.getLogger("k8s_step_operator")

# How long the outcome may wait for the failed pod's exit code to reach the cache.
_EXIT_CODE_GRACE = 2.0
_TICK = 1.0
# Seconds a missing Job may stay out of the cache before the server is asked directly.
_MISSING_GRACE = 5.0
# Retry budget of the clean-up after an interrupt: the caller is on its way out.
_CLEANUP_BUDGET = 15.0
# How long a step no node fits waits for an autoscaler the identity cannot see to speak.
AUTOSCALER_GRACE = 20.0
# A line saying the step still waits, when nothing else was said for this long.
HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class StepIdentity:
    """Which attempt of which step a Job runs: a Job is adopted only if all three match."""

    run_id: str
    step_name: str
    step_run_id: str | None = None


class NodeView:
    """A short-lived cache of the cluster's nodes for the preflight fit check.

    Reading nodes needs a ClusterRole many admins will not grant: without it the check is skipped,
    and that is said once per view (one per operator), not once per step.
    """

    TTL = 10.0

    def __init__(self, api: KubeAccess, clock: Clock = SYSTEM_CLOCK) -> None:
        self.api = api
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]] | None] | None = None
        self._warned = False

    def nodes(self) -> list[dict[str, Any]] | None:
        """The nodes, or ``None`` when they cannot be read."""
        with self._lock:
            now = self.clock.monotonic()
            if self._cached is not None and now - self._cached[0] < self.TTL:
                return self._cached[1]
            nodes: list[dict[str, Any]] | None
            try:
                nodes = cast("list[dict[str, Any]]", self.api.list_nodes())
            except ForbiddenError:
                if not self._warned:
                    log.warning(
                        "no read access to nodes: skipping the preflight fit check; an "
                        "unschedulable step fails after its pending timeout instead"
                    )
                    self._warned = True
                nodes = None
            except ApiError as e:
                log.debug("cannot list nodes for the fit check: %s", e)
                nodes = None
            self._cached = (now, nodes)
            return nodes


class StepRun:
    """One step's Job from submission to its end.

    Args:
        api: The API access.
        job: The Job to submit, as built by the builder.
        step: The run, step and step run the Job belongs to; a Job found under the same name is
            adopted only if its annotations name the same.
        settings: The step's merged settings: the phase bounds and how to follow it.
        clock: The clock.
        watchers: Where shared namespace watchers come from.
        nodes: The node view for the fit check (``None``: a private one).
        autoscalers: Which autoscalers the cluster runs (``None``: a private view).
        queues: Kueue's LocalQueues and queue positions (``None``: a private view).
        companion: Builds, from the created Job, an object to create right after it (a Secret
            owned by the Job), or ``None``.
        cancel_wait_timeout: Seconds to wait for the pods to go after a delete.
        log_drain_timeout: Seconds to wait for the last log lines once the Job ended.
    """

    def __init__(
        self,
        api: KubeAccess,
        job: Mapping[str, Any],
        *,
        step: StepIdentity,
        settings: KubernetesJobStepOperatorSettings,
        clock: Clock = SYSTEM_CLOCK,
        watchers: WatcherRegistry = WATCHERS,
        nodes: NodeView | None = None,
        autoscalers: AutoscalerView | None = None,
        queues: QueueView | None = None,
        companion: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        cancel_wait_timeout: float = 120.0,
        log_drain_timeout: float = 10.0,
    ) -> None:
        self.api = api
        self.job = dict(job)
        self.name = str(job["metadata"]["name"])
        self.namespace = str(job["metadata"]["namespace"])
        self.step = step
        self.settings = settings
        self.clock = clock
        self.watchers = watchers
        self.nodes = nodes or NodeView(api, clock)
        self.autoscalers = autoscalers or AutoscalerView(api, clock)
        self.queues = queues or QueueView(api, clock)
        labels = (job.get("metadata") or {}).get("labels") or {}
        self.queue_name = str(labels.get(KUEUE_QUEUE_LABEL, ""))
        self._admission_said = False
        self._workloads_warned = False
        self.companion = companion
        self.cancel_wait_timeout = cancel_wait_timeout
        self.log_drain_timeout = log_drain_timeout
        self.uid = ""
        self.step_log = logging.getLogger(f"{log.name}.step")
        self.phase: Phase | None = None

    @property
    def step_name(self) -> str:
        """The step's name in the pipeline."""
        return self.step.step_name

    @property
    def where(self) -> str:
        """``namespace/name`` of the Job."""
        return f"{self.namespace}/{self.name}"

    # -- submit --------------------------------------------------------------------------

    def submit(self) -> dict[str, Any]:
        """Create the Job, or adopt the one already there for the same step run.

        Returns:
            The Job as the server has it.

        Raises:
            NameCollisionError: A Job of that name belongs to another run, step or attempt.
            ApiError: The server refused the Job.
        """
        try:
            job = cast("dict[str, Any]", self.api.create_job(self.namespace, self.job))
            log.info("step %s: submitted Job %s", self.step_name, self.where)
        except ConflictError:
            # Also the path after a create whose answer was lost (a 5xx, a cut connection):
            # the retry meets our own Job and adopts it.
            job = self.get()
            if not self._ours(job):
                raise NameCollisionError(
                    f"Job {self.where} exists but belongs to another run, step or attempt "
                    f"({(job.get('metadata') or {}).get('annotations')})",
                    status=409,
                    reason="AlreadyExists",
                    operation=f"create Job {self.where}",
                ) from None
            log.info("step %s: reattached to existing Job %s", self.step_name, self.where)
        self.uid = str(job["metadata"]["uid"])
        self._create_companion(job)
        return job

    def _ours(self, job: Mapping[str, Any]) -> bool:
        return same_step(job, self.step.run_id, self.step.step_name, self.step.step_run_id)

    def _create_companion(self, job: Mapping[str, Any]) -> None:
        if self.companion is None:
            return
        obj = self.companion(job)
        with contextlib.suppress(ConflictError):  # a reattaching caller made it already
            self.api.create_secret(self.namespace, obj)

    def get(self) -> dict[str, Any]:
        """Read the Job from the server."""
        return cast("dict[str, Any]", self.api.get_job(self.namespace, self.name))

    # -- wait ----------------------------------------------------------------------------

    def wait(self) -> None:
        """Follow the submitted Job until it ends.

        Raises:
            StepError: The step did not succeed; the subclass says why.
        """
        watcher = self.watchers.acquire(
            self.api,
            self.namespace,
            clock=self.clock,
            safety_interval=self.settings.safety_poll_interval,
        )
        sub = watcher.subscribe(self.name)
        follower: LogFollower | None = None
        if self.settings.stream_logs:
            follower = LogFollower(
                self.api,
                self.namespace,
                self.step_log,
                container_done=lambda pod, c: self._container_done(watcher, pod, c),
                clock=self.clock,
            )

        def wait_for_change(timeout: float) -> bool:
            fired = self.clock.wait(sub.changed, timeout)
            sub.changed.clear()
            return fired

        try:
            self._wait(watcher, wait_for_change, follower)
        finally:
            if follower is not None:
                follower.stop()
            watcher.unsubscribe(sub)
            self.watchers.release(watcher)

    def _wait(
        self,
        watcher: NamespaceWatcher,
        wait_for_change: Callable[[float], bool],
        follower: LogFollower | None,
    ) -> None:
        clock = self.clock
        timers = Timers()
        phase_since = said_at = clock.monotonic()
        if self.queue_name:
            watcher.watch_workloads()
        missing_since: float | None = None
        failed_at: float | None = None
        last_summary = ""
        while True:
            wait_for_change(_TICK)
            now = clock.monotonic()
            if watcher.failure is not None:
                raise watcher.failure
            job = watcher.job(self.name)
            if job is None or job["metadata"].get("uid") != self.uid:
                if watcher.was_deleted(self.name, self.uid):
                    raise DeletedExternallyError(
                        "the Job was deleted before it finished", **self._facts(follower)
                    )
                # Not in the cache (yet): after a while, ask the server directly.
                missing_since = missing_since if missing_since is not None else now
                if now - missing_since > _MISSING_GRACE:
                    job = self._get_or_deleted(follower)
                    watcher.remember_job(job)
                    missing_since = None
                else:
                    continue
            pods = watcher.pods_of(self.uid)
            if follower is not None:
                follower.update(pods)
            events = watcher.events_for(self.name, *(p["metadata"]["name"] for p in pods))
            workload = self._workload(watcher) if self.queue_name else None
            queue = None
            if self.queue_name and not pods:
                queued_for = now - phase_since if self.phase is Phase.QUEUED else 0.0
                queue = self._queue_context(watcher, workload, queued_for)
            obs = observe(job, pods, events, queue)
            if workload is not None:
                self._say_admission(workload, obs)
            if obs.phase is not self.phase:
                self.phase, phase_since, said_at = obs.phase, now, now
                if obs.phase is not Phase.SUCCEEDED:  # success has its own line below
                    self._log_phase(obs)
            elif obs.summary != last_summary and (
                obs.problem is not None or obs.phase in (Phase.QUEUED, Phase.SCALING_UP)
            ):
                self._log_phase(obs)
                said_at = now
            elif now - said_at >= HEARTBEAT_SECONDS:
                self._heartbeat(obs, now - phase_since)
                said_at = now
            last_summary = obs.summary
            if obs.outcome is not None:
                if obs.outcome.succeeded:
                    self._drain(follower, pods)
                    log.info("step %s: succeeded (Job %s)", self.step_name, self.where)
                    return
                if obs.outcome.exit_code is None and obs.outcome.job_reason != "DeadlineExceeded":
                    # The Job's verdict can arrive before the pod's exit code reaches the cache.
                    failed_at = failed_at if failed_at is not None else now
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
            verdict = self._fit(job) if obs.problem is Problem.UNSCHEDULABLE else None
            never_fits = verdict is not None and not verdict.fits
            advice = verdict.advice() if verdict is not None else ""
            may_scale, wait = False, None
            if never_fits and obs.autoscaler is None:
                may_scale, wait, refusals = self._may_scale(job)
                advice = f"{advice}; {refusals}" if refusals else advice
            error = decide(
                obs,
                seen,
                self.settings,
                never_fits=never_fits,
                advice=advice,
                autoscaler_may_act=may_scale,
                autoscaler_wait=wait,
                job=self.name,
                namespace=self.namespace,
            )
            if error is not None:
                log.error("step %s: %s; deleting Job %s", self.step_name, error, self.where)
                self._delete(watcher=watcher)
                raise error

    def _workload(self, watcher: NamespaceWatcher) -> WorkloadState | None:
        found = watcher.workload_of(self.uid)
        return read_workload(found) if found is not None else None

    def _queue_context(
        self, watcher: NamespaceWatcher, workload: WorkloadState | None, queued_for: float
    ) -> QueueContext | None:
        """Kueue's view of the queued Job (``None``: Kueue's objects cannot be read)."""
        unavailable = watcher.workloads_unavailable
        if unavailable is not None and unavailable.status == 404:
            return QueueContext(kueue_missing=True)
        if unavailable is not None:
            if not self._workloads_warned:
                log.warning(
                    "step %s: cannot read Kueue's Workloads (%s): the queued phase is reported "
                    "without Kueue's reasons",
                    self.step_name,
                    unavailable,
                )
                self._workloads_warned = True
            return None
        cluster_queue = self.queues.cluster_queue(self.namespace, self.queue_name)
        position = None
        if workload is not None and workload.waiting_reason == "Pending":
            position = self.queues.position(self.namespace, self.queue_name, workload.name)
        return QueueContext(
            workload=workload,
            cluster_queue=cluster_queue,
            position=position,
            waited_without_workload=queued_for if workload is None else 0.0,
        )

    def _say_admission(self, workload: WorkloadState, obs: Observation) -> None:
        """One line when Kueue admits the step (with the flavors), one when it evicts it."""
        if workload.admitted and not self._admission_said:
            self._admission_said = True
            flavors = f" with flavor {workload.flavor_text}" if workload.flavors else ""
            log.info(
                "step %s: admitted by Kueue to ClusterQueue %s%s",
                self.step_name,
                workload.cluster_queue,
                flavors,
            )
        elif workload.evicted and not workload.admitted and self._admission_said:
            self._admission_said = False
            log.warning(
                "step %s: preempted by Kueue (%s: %s); queued again, it will run again from "
                "the start",
                self.step_name,
                workload.evicted_reason,
                workload.evicted,
            )

    def _log_phase(self, obs: Observation) -> None:
        level = logging.WARNING if obs.problem is not None else logging.INFO
        log.log(
            level,
            "step %s: %s - %s",
            self.step_name,
            obs.phase.value,
            obs.summary,
            extra={"k8sso_phase": obs.phase.value},
        )

    def _heartbeat(self, obs: Observation, elapsed: float) -> None:
        bound_name, bound = _bound_of(obs, self.settings)
        against = f"; {bound_name} {bound:.0f}s" if bound is not None else ""
        log.info(
            "step %s: still %s after %s%s - %s",
            self.step_name,
            obs.phase.value,
            _duration(elapsed),
            against,
            obs.summary,
            extra={"k8sso_phase": obs.phase.value, "k8sso_elapsed": elapsed},
        )

    def _facts(self, follower: LogFollower | None) -> dict[str, Any]:
        facts: dict[str, Any] = {"job": self.name, "namespace": self.namespace}
        if follower is not None:
            facts["log_tail"] = follower.last_lines()
        return facts

    def _log_tail(self, pod: str, container: str) -> list[str]:
        """The last lines of a container's log, read once (when logs were not streamed)."""
        try:
            stream = self.api.pod_log(
                self.namespace,
                pod,
                container,
                follow=False,
                tail_lines=TAIL_LINES,
                timestamps=False,
            )
            lines = list(stream)
        except ApiError as e:
            log.debug("no log tail for %s: %s", pod, e)
            return []
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
            if pod_finished(p):
                return True
            state = container_state(p, container)
            return bool(state and state.get("terminated"))
        return True  # the pod is gone: nothing more will come

    def _drain(self, follower: LogFollower | None, pods: list[dict[str, Any]]) -> None:
        if follower is not None:
            follower.drain(pods, self.log_drain_timeout)

    def _fit(self, job: Mapping[str, Any]) -> FitVerdict | None:
        """Whether any node could ever run the pod (``None``: not checked)."""
        if not self.settings.preflight_fit_check:
            return None
        nodes = self.nodes.nodes()
        if nodes is None:
            return None
        pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        verdict = check_fit(pod_spec, nodes)
        if not verdict.fits:
            log.debug("no node fits Job %s: %s", self.where, "; ".join(verdict.reasons))
        return verdict

    def _may_scale(self, job: Mapping[str, Any]) -> tuple[bool, float | None, str]:
        """Whether an autoscaler may still add a node for the pod.

        Returns:
            ``(may, wait, refusals)``: ``wait`` bounds the wait for an autoscaler that may exist
            but cannot be seen (``None``: scale_up_timeout applies); ``refusals`` says why no
            NodePool allows the pod.
        """
        presence = self.autoscalers.presence()
        refusals = ""
        if presence.karpenter:
            pod_spec = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
            admitting, refused = nodepools_admitting(pod_spec, presence.nodepools)
            if admitting:
                return True, None, ""
            refusals = "; ".join(refused) if refused else "Karpenter has no NodePool"
        if presence.cluster_autoscaler:
            return True, None, ""
        if presence.cluster_autoscaler is None and not presence.karpenter:
            # A cluster autoscaler may run where this identity cannot look: it speaks on the
            # pod within its scan interval (10 s by default) when it does.
            return True, AUTOSCALER_GRACE, refusals
        return False, None, refusals

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, *, budget: float | None = None) -> None:
        """Delete the Job with background propagation and wait until none of its pods is left.

        Args:
            budget: Seconds of retrying the delete (``None``: the API access's default).
        """
        self._delete(watcher=None, budget=budget)

    def _delete(self, *, watcher: NamespaceWatcher | None, budget: float | None = None) -> None:
        if not self.settings.delete_on_cancel:
            log.warning("leaving Job %s in place (delete_on_cancel is off)", self.where)
            return
        # Not found: gone already. Conflict: the name now holds someone else's Job.
        with contextlib.suppress(NotFoundError, ConflictError):
            self.api.delete_job(self.namespace, self.name, uid=self.uid or None, budget=budget)
        if not self.uid:
            return
        own = watcher is None
        w = watcher or self.watchers.acquire(self.api, self.namespace, clock=self.clock)
        try:
            w.wait_synced(10)
            deadline = self.clock.monotonic() + self.cancel_wait_timeout
            sub = w.subscribe(self.name)
            try:
                while w.pods_of(self.uid):
                    if self.clock.monotonic() > deadline:
                        log.error(
                            "pods of Job %s still present after %.0fs",
                            self.where,
                            self.cancel_wait_timeout,
                        )
                        return
                    self.clock.wait(sub.changed, _TICK)
                    sub.changed.clear()
            finally:
                w.unsubscribe(sub)
        finally:
            if own:
                self.watchers.release(w)
        log.info("Job %s deleted; no pod of it is left", self.where)

    # -- the synchronous whole -------------------------------------------------------------

    def run(self) -> None:
        """Submit, wait, and clean up on interrupt; the synchronous form ``launch`` uses.

        Raises:
            StepError: The step did not succeed.
            KeyboardInterrupt: Re-raised after the Job and its pods were deleted.
            StepCancelledError: SIGTERM or SIGHUP arrived (after the clean-up the setting
                ``on_sigterm`` asks for).
        """
        with _termination_raises() as terminated:
            try:
                self.submit()
                self.follow()
                return
            except (KeyboardInterrupt, _Terminated) as e:
                interrupt: BaseException = e
                self.on_interrupt(terminated=isinstance(e, _Terminated))
        if terminated.is_set():
            signum = terminated.signum
            # The handler in force before is back: deliver the signal to it (by default: exit).
            signal.raise_signal(signum)
            raise StepCancelledError(
                f"terminated by {signal.Signals(signum).name}",
                job=self.name,
                namespace=self.namespace,
            ) from None
        raise interrupt

    def follow(self, *, interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)) -> None:
        """Wait for the submitted Job; delete it if following fails for another reason.

        Args:
            interrupts: Exceptions that mean the caller is going away; they pass through for the
                caller's ``on_interrupt``.

        Raises:
            StepError: The step did not succeed.
        """
        try:
            self.wait()
        except StepError:
            raise  # the Job ended, or was deleted on the way out
        except interrupts:
            raise
        except Exception:
            # Nobody would follow the Job any more: do not leave it holding GPUs.
            log.exception("error while following Job %s; deleting it", self.where)
            with contextlib.suppress(Exception):
                self.cancel(budget=_CLEANUP_BUDGET)
            raise

    def on_interrupt(self, *, terminated: bool) -> None:
        """The caller is going away: delete the Job, or leave it (``on_sigterm: detach``).

        Never raises: a failing clean-up is logged with what to do by hand, and the interrupt
        that caused it is what the caller sees.
        """
        if terminated and getattr(self.settings, "on_sigterm", "delete") == "detach":
            log.warning(
                "step %s: terminated; leaving Job %s running (on_sigterm is detach): launching "
                "the same step run again reattaches to it",
                self.step_name,
                self.where,
            )
            return
        log.warning(
            "step %s interrupted: deleting Job %s and waiting for its pods",
            self.step_name,
            self.where,
        )
        with _signals_deferred():
            try:
                if not self.uid:
                    self._adopt_for_cancel()
                self.cancel(budget=_CLEANUP_BUDGET)
            except Exception as e:
                log.error(
                    "step %s: could not delete Job %s while cancelling (%s); delete it with "
                    "`kubectl delete job -n %s %s`",
                    self.step_name,
                    self.where,
                    e,
                    self.namespace,
                    self.name,
                )

    def _adopt_for_cancel(self) -> None:
        """Learn the uid of a Job whose create may have succeeded before the interrupt."""
        try:
            job = self.get()
        except NotFoundError:
            return
        except ApiError as e:
            # Cannot tell whose Job it is: the delete below goes by name (the name is a hash of
            # this step run, so it is ours in practice).
            log.debug("cannot read Job %s before deleting it: %s", self.where, e)
            return
        if self._ours(job):
            self.uid = str(job["metadata"]["uid"])


def _bound_of(
    obs: Observation, settings: KubernetesJobStepOperatorSettings
) -> tuple[str, float | None]:
    """The setting that bounds the current phase or problem, and its value."""
    if obs.problem is Problem.IMAGE_PULL:
        return "image_pull_backoff_timeout", settings.image_pull_backoff_timeout
    if obs.problem is Problem.MISSING_CONFIG:
        return "missing_config_grace", settings.missing_config_grace
    if obs.phase is Phase.QUEUED:
        return "queue_timeout", settings.queue_timeout
    if obs.phase is Phase.SCHEDULING:
        return "pending_timeout", settings.pending_timeout
    if obs.phase is Phase.RUNNING:
        deadline = settings.active_deadline_seconds
        return "active_deadline_seconds", float(deadline) if deadline is not None else None
    return "", None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a step was being followed."""


class _TerminationFlag(threading.Event):
    signum: int = signal.SIGTERM


_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _termination_raises() -> Iterator[_TerminationFlag]:
    """Within the block, SIGTERM and SIGHUP interrupt the main thread like Ctrl-C does.

    Signal handlers can only be set from the main thread; elsewhere the block changes nothing
    and the caller's own handling applies.
    """
    flag = _TerminationFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.signum = signum
        flag.set()
        raise _Terminated()

    previous = {s: signal.signal(s, handler) for s in _TERMINATING}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore a second interrupt while the Job is being deleted, so the clean-up completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, *_TERMINATING)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def job_status(api: KubeAccess, namespace: str, name: str) -> Observation | None:
    """The current observation of a Job, read directly (for the non-blocking API).

    Returns:
        ``None`` when the Job does not exist.
    """
    try:
        job = api.get_job(namespace, name)
    except NotFoundError:
        return None
    uid = job["metadata"]["uid"]
    pods = (
        api.list_objects("pods", namespace, f"{JOB_CONTROLLER_UID_LABEL}={uid}").get("items") or []
    )
    return observe(job, pods)
