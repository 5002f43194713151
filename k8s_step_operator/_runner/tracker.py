"""The step tracker: every decision of the wait loop, as a pure function of plain data.

``advance(context, state, seen, now, wall)`` takes what the runner last read (``Seen``: the
diagnosed ``Observation``, Kueue's Workload, what the nodes and autoscalers say) and returns the
new state, the events to publish and what the runner must do next (an ``Action``). It reads no
clock and calls no API: the runner (``step_run``) does the I/O and feeds it, and the unit tests
drive it with plain values, one call per look, through every phase and bound.

The state is per step and per pod: each pod of the Job is tracked by its rank (its completion
index; 0 for a Job of one pod), and the step's outcome is derived from the Job's own verdict,
which covers every pod. A step of one pod is a gang of one. For a step on several nodes the
diagnosis reads every rank (``Observation.ranks``); the tracker remembers each one's pod, phase
and node, and says once where the step landed (``RanksPlaced``) when every rank has a node.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from k8s_step_operator._errors import StepError
from k8s_step_operator._runner.diagnosis import (
    Bounds,
    Observation,
    Outcome,
    Phase,
    Placement,
    Problem,
    RankView,
    decide,
    unavailable_image_bound,
)
from k8s_step_operator._runner.events import (
    Admitted,
    Event,
    Heartbeat,
    PhaseChanged,
    Preempted,
    RanksPlaced,
    Timeline,
)
from k8s_step_operator._runner.kueue import WorkloadState

__all__ = [
    "EXIT_CODE_GRACE",
    "HEARTBEAT_SECONDS",
    "MISSING_GRACE",
    "Action",
    "Advance",
    "RankState",
    "Seen",
    "StepContext",
    "TrackerState",
    "advance",
    "bound_of",
    "problem_age",
    "start",
    "timeline",
]

# How long the outcome may wait for the failed pod's exit code to reach the cache.
EXIT_CODE_GRACE = 2.0
# Seconds a missing Job may stay out of the cache before the server is asked directly.
MISSING_GRACE = 5.0
# A line saying the step still waits, when nothing else was said for this long.
HEARTBEAT_SECONDS = 60.0


class Action(enum.Enum):
    """What the runner does after a look."""

    WAIT = "wait"  # look again at the next change (or tick)
    READ_JOB = "read-job"  # the Job is missing from the cache for too long: ask the server
    SUCCEEDED = "succeeded"  # drain the logs and return
    FAILED = "failed"  # the Job failed: drain the logs and raise the outcome's error
    GIVE_UP = "give-up"  # a bound or a problem decided: delete the Job and raise ``error``
    DELETED = "deleted"  # someone else deleted the Job


@dataclass(frozen=True)
class StepContext:
    """What the tracker knows of the step besides what it sees: who it is and its bounds.

    Attributes:
        step: The step's name in its pipeline.
        job: The Job's name.
        namespace: The Job's namespace.
        bounds: The phase bounds.
        step_run_id: The step run, when the caller named one.
        gpus: GPUs per pod the step requested.
        gpu_resource: Which extended resource they are (``""`` when none).
        heartbeat: Seconds of silence before a heartbeat.
        ranks: The step's pods that run at once (its nodes; 1 for a Job of one pod).
        topology: The topology level its ranks share (``settings.topology``), or ``""``.
    """

    step: str
    job: str
    namespace: str
    bounds: Bounds
    step_run_id: str | None = None
    gpus: int = 0
    gpu_resource: str = ""
    heartbeat: float = HEARTBEAT_SECONDS
    ranks: int = 1
    topology: str = ""


@dataclass(frozen=True)
class Seen:
    """One look at the step: what the runner read, already diagnosed.

    Attributes:
        observation: The step as its Job, pods and events show it; ``None`` when the Job is not
            in the cache.
        deleted: The Job the runner follows (its uid) was seen deleted.
        workload: Kueue's Workload of the Job, when it has a queue and Kueue made one.
        placement: What the nodes and autoscalers say of an unschedulable pod (looked at only
            when the observation says unschedulable).
        domains: For a step on several nodes with a topology level, each node's domain in it
            (``None``: not looked up).
    """

    observation: Observation | None
    deleted: bool = False
    workload: WorkloadState | None = None
    placement: Placement | None = None
    domains: Mapping[str, str] | None = None


@dataclass(frozen=True)
class RankState:
    """One pod of the step, by rank: where it is and since when.

    Attributes:
        pod: The pod's name.
        phase: Its phase.
        since: When it entered that phase (monotonic seconds).
        node: Its node, once scheduled.
    """

    pod: str
    phase: Phase
    since: float
    node: str = ""


@dataclass(frozen=True)
class TrackerState:
    """Everything the tracker remembers between looks; ``start`` makes the first one.

    Attributes:
        started: When following began (monotonic seconds).
        phase: The step's phase (``None`` before the first look).
        phase_since: When it entered that phase.
        said_at: When something was last said (an event other than a log line).
        last_summary: The summary last seen.
        missing_since: Since when the Job has been missing from the cache.
        failed_at: When the Job's failure was first seen without its exit code.
        problem_since: When each current problem was first seen.
        admitted: Whether Kueue's admission was said (and not undone by an eviction since).
        spent: Seconds spent in each phase left so far.
        ranks: The pods, by rank.
        placed: Where every rank landed was said (``RanksPlaced``).
    """

    started: float
    phase: Phase | None = None
    phase_since: float = 0.0
    said_at: float = 0.0
    last_summary: str = ""
    missing_since: float | None = None
    failed_at: float | None = None
    problem_since: Mapping[Problem, float] = field(default_factory=lambda: MappingProxyType({}))
    admitted: bool = False
    spent: Mapping[Phase, float] = field(default_factory=lambda: MappingProxyType({}))
    ranks: Mapping[int, RankState] = field(default_factory=lambda: MappingProxyType({}))
    placed: bool = False

    def in_phase(self, now: float) -> float:
        """Seconds in the current phase."""
        return now - self.phase_since if self.phase is not None else 0.0

    @property
    def node(self) -> str:
        """The node of the lowest rank that has one (``""``: none scheduled yet)."""
        for rank in sorted(self.ranks):
            if self.ranks[rank].node:
                return self.ranks[rank].node
        return ""


@dataclass(frozen=True)
class Advance:
    """The result of one look.

    Attributes:
        state: The state to pass to the next call.
        events: What to publish, in order.
        action: What the runner must do now.
        outcome: The Job's outcome (``SUCCEEDED``, ``FAILED``).
        error: The error to raise (``GIVE_UP``); the runner deletes the Job first.
    """

    state: TrackerState
    events: tuple[Event, ...] = ()
    action: Action = Action.WAIT
    outcome: Outcome | None = None
    error: StepError | None = None


def start(now: float) -> TrackerState:
    """The state before the first look."""
    return TrackerState(started=now, phase_since=now, said_at=now)


def problem_age(
    since: Mapping[Problem, float], problem: Problem | None, now: float
) -> tuple[Mapping[Problem, float], float]:
    """Record ``problem`` as the current one (forgetting the others).

    Returns:
        The new record and for how long ``problem`` has been seen (0 for ``None`` or new).
    """
    if problem is None:
        return MappingProxyType({}), 0.0
    first = since.get(problem, now)
    return MappingProxyType({problem: first}), now - first


def bound_of(obs: Observation, bounds: Bounds) -> tuple[str, float | None]:
    """The setting that bounds the current phase or problem, and its value."""
    if obs.problem is Problem.IMAGE_PULL:
        return "image_pull_backoff_timeout", bounds.image_pull_backoff_timeout
    if obs.problem is Problem.IMAGE_UNAVAILABLE:
        return "image_pull_backoff_timeout", unavailable_image_bound(bounds)
    if obs.problem in (Problem.MISSING_CONFIG, Problem.QUEUE_INACTIVE):
        return "missing_config_grace", bounds.missing_config_grace
    if obs.phase is Phase.QUEUED:
        return "queue_timeout", bounds.queue_timeout
    if obs.phase is Phase.SCHEDULING:
        return "pending_timeout", bounds.pending_timeout
    if obs.phase is Phase.RUNNING:
        deadline = bounds.active_deadline_seconds
        return "active_deadline_seconds", float(deadline) if deadline is not None else None
    return "", None


def timeline(context: StepContext, state: TrackerState, now: float) -> Timeline:
    """Where the step spent its time up to ``now`` (the current phase counted until then)."""
    spent = dict(state.spent)
    if state.phase is not None:
        spent[state.phase] = spent.get(state.phase, 0.0) + max(0.0, now - state.phase_since)
    return Timeline(
        seconds=MappingProxyType(spent),
        node=state.node,
        gpus=context.gpus,
        gpu_resource=context.gpu_resource,
        ranks=context.ranks,
    )


def advance(
    context: StepContext, state: TrackerState, seen: Seen, now: float, wall: datetime
) -> Advance:
    """One look at the step: the new state, what to say, and what to do.

    Args:
        context: The step and its bounds.
        state: The state the previous call returned (``start`` for the first).
        seen: What the runner read and diagnosed.
        now: Monotonic seconds.
        wall: Wall-clock time, for the events.
    """
    ident: dict[str, Any] = {
        "step": context.step,
        "job": context.job,
        "namespace": context.namespace,
        "step_run_id": context.step_run_id,
        "at": wall,
    }
    obs = seen.observation
    if obs is None:
        if seen.deleted:
            return Advance(state, action=Action.DELETED)
        missing_since = state.missing_since if state.missing_since is not None else now
        if now - missing_since > MISSING_GRACE:
            return Advance(replace(state, missing_since=None), action=Action.READ_JOB)
        return Advance(replace(state, missing_since=missing_since))
    state = replace(state, missing_since=None)
    events: list[Event] = []

    workload = seen.workload
    if workload is not None:
        if workload.admitted and not state.admitted:
            state = replace(state, admitted=True)
            events.append(
                Admitted(
                    **ident,
                    cluster_queue=workload.cluster_queue,
                    flavors=MappingProxyType(dict(workload.flavors)),
                )
            )
        elif workload.evicted and not workload.admitted and state.admitted:
            state = replace(state, admitted=False)
            events.append(
                Preempted(**ident, reason=workload.evicted_reason, message=workload.evicted)
            )

    state = _track_rank(state, obs, now)
    if obs.phase is not state.phase:
        spent = dict(state.spent)
        if state.phase is not None:
            spent[state.phase] = spent.get(state.phase, 0.0) + (now - state.phase_since)
        events.append(_phase_event(ident, obs, state.phase, 0.0))
        state = replace(
            state,
            phase=obs.phase,
            phase_since=now,
            said_at=now,
            spent=MappingProxyType(spent),
        )
    elif obs.summary != state.last_summary and (
        obs.problem is not None or obs.phase in (Phase.QUEUED, Phase.SCALING_UP)
    ):
        events.append(_phase_event(ident, obs, state.phase, state.in_phase(now)))
        state = replace(state, said_at=now)
    elif now - state.said_at >= context.heartbeat:
        name, bound = bound_of(obs, context.bounds)
        events.append(
            Heartbeat(
                **ident,
                phase=obs.phase,
                elapsed=state.in_phase(now),
                summary=obs.summary + (f" ({obs.count} attempts)" if obs.count > 1 else ""),
                bound_name=name,
                bound=bound,
            )
        )
        state = replace(state, said_at=now)
    state = replace(state, last_summary=obs.summary)
    if context.ranks > 1 and not state.placed and _all_placed(context, state):
        nodes = {rank: r.node for rank, r in sorted(state.ranks.items())}
        events.append(
            RanksPlaced(
                **ident,
                nodes=MappingProxyType(nodes),
                level=context.topology,
                domains=MappingProxyType(dict(seen.domains or {})),
            )
        )
        state = replace(state, placed=True)

    outcome = obs.outcome
    if outcome is not None:
        if outcome.succeeded:
            return Advance(state, tuple(events), Action.SUCCEEDED, outcome)
        if outcome.exit_code is None and outcome.job_reason != "DeadlineExceeded":
            # The Job's verdict can arrive before the pod's exit code reaches the cache.
            failed_at = state.failed_at if state.failed_at is not None else now
            state = replace(state, failed_at=failed_at)
            if now - failed_at < EXIT_CODE_GRACE:
                return Advance(state, tuple(events))
        return Advance(state, tuple(events), Action.FAILED, outcome)

    since, seen_for = problem_age(state.problem_since, obs.problem, now)
    state = replace(state, problem_since=since)
    if obs.problem is None and obs.phase in (Phase.SCHEDULING, Phase.QUEUED):
        seen_for = state.in_phase(now)
    placement = seen.placement if obs.problem is Problem.UNSCHEDULABLE else None
    error = decide(
        obs,
        seen_for,
        context.bounds,
        placement,
        job=context.job,
        namespace=context.namespace,
    )
    if error is not None:
        return Advance(state, tuple(events), Action.GIVE_UP, error=error)
    return Advance(state, tuple(events))


def _all_placed(context: StepContext, state: TrackerState) -> bool:
    ranks = state.ranks
    return len(ranks) >= context.ranks and all(ranks[r].node for r in range(context.ranks))


def _track_rank(state: TrackerState, obs: Observation, now: float) -> TrackerState:
    """Remember the pod of each rank the observation was read from (rank 0 for one pod)."""
    views = obs.ranks or (
        (RankView(0, obs.phase, obs.summary, pod=obs.pod, node=obs.node),) if obs.pod else ()
    )
    ranks = dict(state.ranks)
    for view in views:
        if not view.pod:
            continue
        before = ranks.get(view.rank)
        if before is not None and before.pod == view.pod and before.phase is view.phase:
            if view.node and not before.node:
                ranks[view.rank] = replace(before, node=view.node)
            continue
        same = before is not None and before.pod == view.pod
        node = view.node or (before.node if same and before is not None else "")
        ranks[view.rank] = RankState(pod=view.pod, phase=view.phase, since=now, node=node)
    if ranks == state.ranks:
        return state
    return replace(state, ranks=MappingProxyType(ranks))


def _phase_event(
    ident: Mapping[str, Any], obs: Observation, previous: Phase | None, elapsed: float
) -> PhaseChanged:
    return PhaseChanged(
        **ident,
        phase=obs.phase,
        previous=previous,
        summary=obs.summary,
        problem=obs.problem,
        reason=obs.reason,
        message=obs.message,
        pod=obs.pod,
        node=obs.node,
        elapsed=elapsed,
    )
