"""Submits one step's Job, follows it to its end, and never leaves it behind.

The synchronous contract of ``launch`` is kept by ``StepRun.run``: submit idempotently (a restarted
caller reattaches to its Job instead of starting a second one), wait on the shared namespace
watcher, stream the step's output, and turn the outcome into one of our errors. An interrupt
(Ctrl-C, SIGTERM or SIGHUP) deletes the Job with background propagation and waits until none of
its pods is left before re-raising, so no GPU stays held by a caller that is gone; a failure of
that clean-up is logged and never replaces the interrupt. Jobs that finish are deleted by their
TTL, after the logs are read.

This module is the I/O shell around the pure tracker (``tracker.advance``): it reads the
watcher's caches, asks the nodes, autoscalers and Kueue when the tracker's inputs need them, feeds
the tracker, publishes the events it returns and carries out its action. Everything it needs
from the outside comes in as parameters: the API access, the clock, the watcher registry, the
event bus and the node view. Unit tests pass in-memory fakes of each.

A step on several nodes is the same loop over one Indexed Job: right after the Job, the runner
creates its headless Service (owned by the Job, like the env Secret), and if it cannot, deletes
the Job again; before the Job, a ``topology`` level that no readable node carries is refused.
The fit check also asks whether all the ranks could ever be placed at once (enough nodes of the
model, in one domain of the topology level, counting what Karpenter's NodePools may add), and the
logs of every rank (or of rank 0 alone, ``log_ranks``) are prefixed with the rank.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from k8s_step_operator._errors import (
    ApiError,
    ConfigurationError,
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
from k8s_step_operator._job.ranks import build_rank_service, ranks_of
from k8s_step_operator._job.settings import KubernetesJobStepOperatorSettings
from k8s_step_operator._objects import (
    Job,
    Node,
    NodePool,
    ObjectMeta,
    Pod,
    PodSpec,
    labels_of,
    name_of,
)
from k8s_step_operator._runner.autoscaler import (
    CLUSTER_AUTOSCALER,
    KARPENTER,
    UNSEEN,
    AutoscalerView,
    nodepool_room,
    nodepools_admitting,
)
from k8s_step_operator._runner.diagnosis import (
    Observation,
    Phase,
    Placement,
    Problem,
    QueueContext,
    job_failed,
    observe,
    outcome_error,
    reads_events,
)
from k8s_step_operator._runner.event_log import log_event
from k8s_step_operator._runner.events import Event, EventBus, Finished, LogLine, Submitted
from k8s_step_operator._runner.fit import check_fit, gang_room
from k8s_step_operator._runner.kueue import QueueState, QueueView, WorkloadState, read_workload
from k8s_step_operator._runner.logs import TAIL_LINES, LogFollower
from k8s_step_operator._runner.pods import container_state, pod_finished
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock, KubeAccess
from k8s_step_operator._runner.signals import Terminated, signals_deferred, terminations_raise
from k8s_step_operator._runner.step_events import StepEvents
from k8s_step_operator._runner.tracker import (
    Action,
    Advance,
    Seen,
    StepContext,
    TrackerState,
    advance,
    start,
    timeline,
)
from k8s_step_operator._runner.watcher import (
    NamespaceWatcher,
    WatcherRegistry,
    with_launcher,
)

__all__ = ["NodeView", "StepIdentity", "StepRun", "job_status"]

log = logging.getLogger("k8s_step_operator")

_TICK = 1.0
# The phases no bound limits as long as no problem shows (the Job controller, the kubelet and the
# step take their time): a step in one of them looks again at its next heartbeat, or when woken.
_UNBOUNDED = frozenset({Phase.SUBMITTED, Phase.STARTING, Phase.RUNNING})
# Retry budget of the clean-up after an interrupt: the caller is on its way out.
_CLEANUP_BUDGET = 15.0
# How long a step no node fits waits for an autoscaler the identity cannot see to speak.
AUTOSCALER_GRACE = 20.0
# Karpenter's label on the nodes it made: their NodePool.
_NODEPOOL_LABEL = "karpenter.sh/nodepool"


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
        self._cached: tuple[float, list[Node] | None] | None = None
        self._warned = False

    def nodes(self) -> list[Node] | None:
        """The nodes, or ``None`` when they cannot be read."""
        with self._lock:
            now = self.clock.monotonic()
            if self._cached is not None and now - self._cached[0] < self.TTL:
                return self._cached[1]
            nodes: list[Node] | None
            try:
                nodes = self.api.list_nodes()
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
        job: The Job to submit, as built by the builder (or, to attach to an existing Job, a
            reference with its ``metadata.name`` and ``namespace``).
        step: The run, step and step run the Job belongs to; a Job found under the same name is
            adopted only if its annotations name the same.
        settings: The step's merged settings: the phase bounds and how to follow it.
        clock: The clock.
        watchers: Where shared namespace watchers come from (``None``: a private registry whose
            watcher stops with the step).
        events: Where the step's events go (``None``: a bus that only logs them).
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
        watchers: WatcherRegistry | None = None,
        events: EventBus | None = None,
        nodes: NodeView | None = None,
        autoscalers: AutoscalerView | None = None,
        queues: QueueView | None = None,
        companion: Callable[[Job], Mapping[str, Any]] | None = None,
        cancel_wait_timeout: float = 120.0,
        log_drain_timeout: float = 10.0,
    ) -> None:
        self.api = api
        # The builder writes a Job's fields; after ``attach``, the Job as the server has it.
        self.job: Job = cast(Job, dict(job))
        self.name = str(job["metadata"]["name"])
        self.namespace = str(job["metadata"]["namespace"])
        self.step = step
        self.settings = settings
        self.clock = clock
        self.watchers = watchers if watchers is not None else WatcherRegistry(linger=0)
        if events is None:
            events = EventBus()
            events.subscribe(log_event)
        self.events = events
        self.nodes = nodes or NodeView(api, clock)
        self.autoscalers = autoscalers or AutoscalerView(api, clock)
        self.queues = queues or QueueView(api, clock)
        labels = (job.get("metadata") or {}).get("labels") or {}
        self.queue_name = str(labels.get(KUEUE_QUEUE_LABEL, ""))
        self._workloads_warned = False
        self.companion = companion
        self.cancel_wait_timeout = cancel_wait_timeout
        self.log_drain_timeout = log_drain_timeout
        self.uid = ""
        # The Job's metadata as the server has it (its uid, its labels), once submitted.
        self._server_meta: ObjectMeta | None = None
        self.context = self._context(self.job)
        self.state: TrackerState = start(clock.monotonic())

    def _context(self, job: Job) -> StepContext:
        ranks = ranks_of(job)
        return StepContext(
            step=self.step.step_name,
            job=self.name,
            namespace=self.namespace,
            bounds=self.settings,
            step_run_id=self.step.step_run_id,
            gpus=_gpus(job),
            gpu_resource=_gpu_resource(job),
            ranks=ranks,
            topology=(self.settings.topology or "") if ranks > 1 else "",
        )

    @property
    def step_name(self) -> str:
        """The step's name in the pipeline."""
        return self.step.step_name

    @property
    def where(self) -> str:
        """``namespace/name`` of the Job."""
        return f"{self.namespace}/{self.name}"

    @property
    def phase(self) -> Phase | None:
        """The step's phase at the last look (``None`` before the first)."""
        return self.state.phase

    def _ids(self) -> dict[str, Any]:
        return {
            "step": self.step_name,
            "job": self.name,
            "namespace": self.namespace,
            "step_run_id": self.step.step_run_id,
            "at": self.clock.now(),
        }

    def _publish(self, event: Event) -> None:
        self.events.publish(event)

    # -- submit and attach -------------------------------------------------------------------

    def submit(self) -> Job:
        """Create the Job, or adopt the one already there for the same step run.

        Returns:
            The Job as the server has it.

        Raises:
            NameCollisionError: A Job of that name belongs to another run, step or attempt.
            ConfigurationError: The step's topology level is carried by no node (nothing was
                created).
            ApiError: The server refused the Job, or its Secret or Service (the Job it created
                is deleted again).
        """
        self._check_topology()
        reattached = False
        try:
            # Labelled with this operator's launcher: its watches select its own Jobs and pods.
            job = self.api.create_job(
                self.namespace, with_launcher(self.job, self.watchers.launcher)
            )
        except ConflictError:
            # Also the path after a create whose answer was lost (a 5xx, a cut connection):
            # the retry meets our own Job and adopts it, as a restarted caller does.
            job = self._adopt(self.get(), operation=f"create Job {self.where}")
            reattached = True
        self.uid = str(job["metadata"]["uid"])
        self._server_meta = _identity_of(job)
        try:
            self._create_companion(job)
        except ApiError as e:
            if not reattached:
                # Without its Secret or Service the Job cannot run: leave nothing behind.
                log.error("step %s: %s; deleting Job %s", self.step_name, e, self.where)
                with contextlib.suppress(Exception):
                    self.cancel(budget=_CLEANUP_BUDGET)
            raise
        self.state = start(self.clock.monotonic())
        self._publish(Submitted(**self._ids(), reattached=reattached))
        return job

    def attach(self) -> Job:
        """Find the step run's existing Job and follow that one from now on.

        Returns:
            The Job as the server has it.

        Raises:
            NotFoundError: The step run has no Job.
            NameCollisionError: The Job of that name belongs to another run, step or attempt.
        """
        return self._adopt(self.get(), operation=f"attach to Job {self.where}")

    def _adopt(self, job: Job, *, operation: str) -> Job:
        """Make ``job`` (read from the server) the one this runner follows, if it is ours."""
        if not self._ours(job):
            raise NameCollisionError(
                f"Job {self.where} exists but belongs to another run, step or attempt "
                f"({job.get('metadata', {}).get('annotations')})",
                status=409,
                reason="AlreadyExists",
                operation=operation,
            )
        self.uid = str(job["metadata"]["uid"])
        self.job = job
        self._server_meta = _identity_of(job)
        self.context = self._context(job)
        self.queue_name = str(labels_of(job).get(KUEUE_QUEUE_LABEL, ""))
        return job

    def _ours(self, job: Job) -> bool:
        return same_step(job, self.step.run_id, self.step.step_name, self.step.step_run_id)

    def _create_companion(self, job: Job) -> None:
        if self.companion is not None:
            obj = self.companion(job)
            with contextlib.suppress(ConflictError):  # a reattaching caller made it already
                self.api.create_secret(self.namespace, obj)
        if ranks_of(self.job) > 1:
            service = build_rank_service(self.job, job_uid=str(job["metadata"]["uid"]))
            with contextlib.suppress(ConflictError):
                self.api.create_service(self.namespace, service)

    def _check_topology(self) -> None:
        """Refuse a topology level no node carries (when the nodes can be read)."""
        level = self.context.topology
        if not level:
            return
        nodes = self.nodes.nodes()
        if nodes is None:
            return
        pod_spec = _pod_spec(self.job)
        candidates = [n for n in nodes if check_fit(pod_spec, [n]).fits] or nodes
        if any(level in labels_of(n) for n in candidates):
            return
        seen = sorted(
            {
                k
                for n in candidates
                for k in labels_of(n)
                if any(w in k for w in ("topology", "zone", "region", "rack", "block"))
            }
        )
        raise ConfigurationError(
            "settings.topology",
            "a node label that the nodes a rank could run on carry"
            + (f" (they carry {', '.join(seen)})" if seen else " (they carry no topology label)"),
            level,
        )

    def get(self) -> Job:
        """Read the Job from the server."""
        return self.api.get_job(self.namespace, self.name)

    # -- wait ----------------------------------------------------------------------------

    def wait(self) -> None:
        """Follow the submitted (or attached) Job until it ends.

        Raises:
            StepError: The step did not succeed; the subclass says why.
        """
        watcher = self.watchers.acquire(
            self.api,
            self.namespace,
            clock=self.clock,
            safety_interval=self.settings.safety_poll_interval,
        )
        sub = watcher.subscribe(self.name, self._server_job())
        events = StepEvents(
            self.api, self.namespace, self.name, watcher.failed_creates, clock=self.clock
        )
        follower: LogFollower | None = None
        if self.settings.stream_logs:
            ranks = self.context.ranks
            follower = LogFollower(
                self.api,
                self.namespace,
                self._log_line,
                container_done=lambda pod, c: self._container_done(watcher, pod, c),
                clock=self.clock,
                ranks=ranks,
                only_rank=0 if ranks > 1 and self.settings.log_ranks == "first" else None,
            )

        def wait_for_change(timeout: float) -> bool:
            fired = self.clock.wait(sub.changed, timeout)
            sub.changed.clear()
            return fired

        self.state = start(self.clock.monotonic())
        try:
            self._wait(watcher, wait_for_change, follower, events)
        finally:
            events.done_waiting()
            if follower is not None:
                follower.stop()
            watcher.unsubscribe(sub)
            self.watchers.release(watcher)

    def _log_line(self, pod: str, container: str, prefix: str, text: str) -> None:
        self._publish(
            LogLine(**self._ids(), pod=pod, container=container, text=text, prefix=prefix)
        )

    def _wait(
        self,
        watcher: NamespaceWatcher,
        wait_for_change: Callable[[float], bool],
        follower: LogFollower | None,
        events: StepEvents,
    ) -> None:
        while True:
            wait_for_change(self._next_look())
            if watcher.failure is not None:
                raise watcher.failure
            seen, pods = self._look(watcher, follower, events)
            now, wall = self.clock.monotonic(), self.clock.now()
            step = advance(self.context, self.state, seen, now, wall)
            self.state = step.state
            for event in step.events:
                self._publish(event)
            if step.action is Action.WAIT:
                continue
            if step.action is Action.READ_JOB:
                watcher.remember_job(self._get_or_deleted(follower))
                continue
            self._finish(step, watcher, follower, pods)
            return

    def _next_look(self) -> float:
        """Seconds until the step must look again though nothing changed (a change wakes it).

        A second while a bound or a grace may expire; in a phase no bound limits (submitted,
        starting, running, with no problem), until its next heartbeat: thousands of waiting steps
        then do not each wake every second (the watcher's reader of the Jobs' refusals wakes a
        step waiting for its pod when one concerns it).
        """
        state, now = self.state, self.clock.monotonic()
        if (
            state.phase not in _UNBOUNDED
            or state.problem_since
            or state.missing_since is not None
            or state.failed_at is not None
        ):
            return _TICK
        until = self.context.heartbeat - (now - state.said_at)
        return max(_TICK, until)

    def _look(
        self, watcher: NamespaceWatcher, follower: LogFollower | None, events: StepEvents
    ) -> tuple[Seen, list[Pod]]:
        """Read the caches, and what the diagnosis needs besides: events, Kueue, nodes."""
        job = watcher.job(self.name)
        if job is None or job["metadata"].get("uid") != self.uid:
            deleted = watcher.was_deleted(self.name, self.uid)
            return Seen(None, deleted=deleted), []
        pods = watcher.pods_of(self.uid)
        if follower is not None:
            follower.update(pods)
        names = [self.name, *(p["metadata"]["name"] for p in pods)]
        workload = self._workload(watcher) if self.queue_name else None
        queue = None
        if self.queue_name and not pods:
            state = self.state
            now = self.clock.monotonic()
            queued_for = state.in_phase(now) if state.phase is Phase.QUEUED else 0.0
            queue = self._queue_context(watcher, workload, queued_for)
        seen_pods = pods
        if self.context.ranks > 1 and job_failed(job) is not None:
            # The rank that failed may be gone already (the Job controller deletes the ranks
            # once the step failed): read it as it was last seen.
            current = {name_of(p) for p in pods}
            gone = [p for p in watcher.gone_pods_of(self.uid) if name_of(p) not in current]
            seen_pods = sorted(
                [*pods, *gone], key=lambda p: str(p["metadata"].get("creationTimestamp", ""))
            )
        obs = observe(job, seen_pods, events.events(names), queue)
        if reads_events(obs):
            # Waiting where events say why: read those of the object waiting (the unschedulable
            # pod, or the Job that has none), at an interval growing with the wait.
            state, now = self.state, self.clock.monotonic()
            waited = state.in_phase(now) if state.phase is obs.phase else 0.0
            if events.refresh(obs.pod or self.name, waited, at_once=obs.problem is not None):
                obs = observe(job, seen_pods, events.events(names), queue)
        if not reads_events(obs) or obs.pod:
            events.done_waiting()
        # The pod's spec from the Job submitted or attached to (the cache keeps no template).
        placement = self._placement(self.job, obs) if obs.problem is Problem.UNSCHEDULABLE else None
        domains = None
        if self.context.topology and obs.ranks and not self.state.placed:
            domains = self._domains(self.context.topology)
        return Seen(obs, workload=workload, placement=placement, domains=domains), pods

    def _domains(self, level: str) -> dict[str, str]:
        """Each node's value of the topology label ``level`` (empty when nodes are unreadable)."""
        nodes = self.nodes.nodes() or []
        return {name_of(n): labels_of(n).get(level, "") for n in nodes}

    def _finish(
        self,
        step: Advance,
        watcher: NamespaceWatcher,
        follower: LogFollower | None,
        pods: list[Pod],
    ) -> None:
        """Carry out a terminal action: return on success, raise otherwise."""
        if step.action is Action.DELETED:
            error: StepError = DeletedExternallyError(
                "the Job was deleted before it finished", **self._facts(follower)
            )
            self._ended(error)
            raise error
        if step.action is Action.GIVE_UP:
            assert step.error is not None
            log.error("step %s: %s; deleting Job %s", self.step_name, step.error, self.where)
            self._delete(watcher=watcher)
            self._ended(step.error)
            raise step.error
        outcome = step.outcome
        assert outcome is not None
        self._drain(follower, pods)
        if outcome.succeeded:
            self._ended(None)
            return
        facts = self._facts(follower)
        if follower is not None and outcome.rank is not None and outcome.pod:
            facts["log_tail"] = follower.last_lines(outcome.pod)
        if follower is None and outcome.pod:
            facts["log_tail"] = self._log_tail(outcome.pod, outcome.container)
        error = outcome_error(outcome, **facts)
        self._ended(error)
        raise error

    def _ended(self, error: StepError | None) -> None:
        self._publish(
            Finished(
                **self._ids(),
                succeeded=error is None,
                error=error,
                timeline=timeline(self.context, self.state, self.clock.monotonic()),
            )
        )

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
        states: tuple[QueueState | None, QueueState | None] = (None, None)
        if workload is not None and workload.inadmissible and cluster_queue != "":
            # Paused, or broken? Only the queues' own status tells.
            states = self.queues.queue_states(self.namespace, self.queue_name, cluster_queue or "")
        return QueueContext(
            workload=workload,
            cluster_queue=cluster_queue,
            position=position,
            waited_without_workload=queued_for if workload is None else 0.0,
            local_queue_state=states[0],
            cluster_queue_state=states[1],
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

    def _get_or_deleted(self, follower: LogFollower | None) -> Job:
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

    def _drain(self, follower: LogFollower | None, pods: list[Pod]) -> None:
        if follower is not None:
            follower.drain(pods, self.log_drain_timeout)

    def _placement(self, job: Job, obs: Observation) -> Placement | None:
        """What the nodes and autoscalers say of the unschedulable pod (``None``: not checked)."""
        if not self.settings.preflight_fit_check:
            return None
        nodes = self.nodes.nodes()
        if nodes is None:
            return None
        pod_spec = job.get("spec", {}).get("template", {}).get("spec", {})
        verdict = check_fit(pod_spec, nodes)
        if verdict.fits:
            if self.context.ranks > 1:
                gang = self._gang_placement(pod_spec, nodes)
                if gang is not None:
                    return gang
            return Placement(advice=verdict.advice())
        log.debug("no node fits Job %s: %s", self.where, "; ".join(verdict.reasons))
        advice = verdict.advice()
        # Even when one autoscaler said no: another one present may still add a node.
        may_act, wait, refusals = self._may_scale(pod_spec)
        return Placement(
            never_fits=True,
            advice=f"{advice}; {refusals}" if refusals else advice,
            may_act=may_act,
            autoscaler_wait=wait,
        )

    def _gang_placement(self, pod_spec: PodSpec, nodes: list[Node]) -> Placement | None:
        """Whether all the ranks could ever run at once (``None``: they could, or may)."""
        n = self.context.ranks
        level = ""
        if self.settings.topology_mode == "required" and not self.queue_name:
            level = self.context.topology  # with Kueue, its topology-aware scheduling judges
        presence = self.autoscalers.presence()
        pools: dict[str, NodePool] = {}
        if presence.karpenter:
            admitting, _ = nodepools_admitting(pod_spec, presence.nodepools)
            pools = {name_of(p): p for p in presence.nodepools if name_of(p) in admitting}
        # Nodes a NodePool made count in its limit, not twice.
        own = [x for x in nodes if labels_of(x).get(_NODEPOOL_LABEL) not in pools]
        room = gang_room(pod_spec, own, level)
        more: int | None = 0
        for pool in pools.values():
            pool_room = nodepool_room(pool, pod_spec)
            more = None if pool_room is None or more is None else more + pool_room
        if pools and level:
            more = None  # which domain Karpenter's nodes would join is not known
        if more is None or room.ranks + more >= n:
            return None
        if level and not room.per_domain:
            why = (
                f"settings.topology: no node that could run a rank carries the label {level} "
                f"(set topology to a label they carry, or unset it)"
            )
        elif level:
            why = (
                f"settings.num_nodes {n} with topology {level} (required): the largest domain "
                f"({level}={room.domain}) could hold {room.ranks} ranks at most: ask for at "
                f"most {room.ranks} nodes, fewer GPUs per rank, or topology_mode 'preferred'"
            )
        else:
            pooled = f" and {more} more from Karpenter's NodePools" if pools else ""
            why = (
                f"settings.num_nodes {n}: the nodes that could run a rank "
                f"({', '.join(room.nodes) or 'none'}) hold {room.ranks} ranks at most{pooled}: "
                f"ask for at most {room.ranks + more} nodes, or fewer GPUs per rank"
            )
        why = f"the {n} ranks can never all be placed at once: {why}"
        log.debug("Job %s: %s", self.where, why)
        ca = presence.cluster_autoscaler
        if ca or (ca is None and not presence.karpenter):
            # A cluster autoscaler may grow a node group; it says so on the pods.
            return Placement(
                never_fits=True,
                gang=why,
                may_act=frozenset({CLUSTER_AUTOSCALER if ca else UNSEEN}),
                autoscaler_wait=None if ca else AUTOSCALER_GRACE,
            )
        return Placement(never_fits=True, gang=why)

    def _may_scale(self, pod_spec: PodSpec) -> tuple[frozenset[str], float | None, str]:
        """Which autoscalers present may still add a node for the pod.

        Returns:
            ``(may_act, wait, refusals)``: ``wait`` bounds the wait for an autoscaler that may
            exist but cannot be seen (``None``: scale_up_timeout applies); ``refusals`` says why
            no NodePool allows the pod.
        """
        presence = self.autoscalers.presence()
        may: set[str] = set()
        wait: float | None = None
        refusals = ""
        if presence.karpenter:
            admitting, refused = nodepools_admitting(pod_spec, presence.nodepools)
            if admitting:
                may.add(KARPENTER)
            else:
                refusals = "; ".join(refused) if refused else "Karpenter has no NodePool"
        if presence.cluster_autoscaler:
            may.add(CLUSTER_AUTOSCALER)
        if presence.cluster_autoscaler is None and not presence.karpenter:
            # A cluster autoscaler may run where this identity cannot look: it speaks on the
            # pod within its scan interval (10 s by default) when it does.
            may.add(UNSEEN)
            wait = AUTOSCALER_GRACE if not may - {UNSEEN} else None
        return frozenset(may), wait, refusals

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
            sub = w.subscribe(self.name, self._server_job())
            try:
                w.wait_synced(10)
                deadline = self.clock.monotonic() + self.cancel_wait_timeout
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
        with terminations_raise() as terminated:
            try:
                self.submit()
                self.follow()
                return
            except (KeyboardInterrupt, Terminated) as e:
                interrupt: BaseException = e
                self.on_interrupt(terminated=isinstance(e, Terminated))
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

    def follow_or_clean_up(
        self, *, interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
    ) -> None:
        """``follow``, and on one of ``interrupts`` delete the Job before re-raising it.

        The form a framework uses when it has its own signal handling (it turns Ctrl-C into its
        own exceptions): the Job is deleted (or left, per ``on_sigterm``) on the way out.

        Raises:
            StepError: The step did not succeed.
        """
        try:
            self.follow(interrupts=interrupts)
        except interrupts:
            self.on_interrupt(terminated=False)
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
        with signals_deferred():
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
            self._server_meta = _identity_of(job)

    def _server_job(self) -> Job | None:
        """The Job's uid and labels as the server has them (``None`` before it is known).

        What the watcher scopes its watches by.
        """
        if not self.uid or self._server_meta is None:
            return None
        return {"metadata": self._server_meta}


def _identity_of(job: Job) -> ObjectMeta:
    """A Job's name, uid and labels: all a step keeps of the server's answer."""
    meta = job.get("metadata", {})
    return {
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "labels": dict(meta.get("labels") or {}),
    }


def _pod_spec(job: Job) -> PodSpec:
    """The Job's pods' spec (``spec.template.spec``)."""
    return job.get("spec", {}).get("template", {}).get("spec", {})


def _gpus(job: Job) -> int:
    """GPUs per pod the Job requests (the first GPU-like resource limit of its containers)."""
    return _gpu_request(job)[1]


def _gpu_resource(job: Job) -> str:
    return _gpu_request(job)[0]


def _gpu_request(job: Job) -> tuple[str, int]:
    for container in _pod_spec(job).get("containers") or []:
        limits = container.get("resources", {}).get("limits", {})
        for resource, value in limits.items():
            if resource.endswith("/gpu") or "/mig-" in resource:
                try:
                    return str(resource), int(str(value))
                except ValueError:
                    continue
    return "", 0


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
