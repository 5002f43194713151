"""Why a step is where it is: a pure reading of its Job, pods and events.

Diagnosis is data. ``observe`` turns the latest objects into an ``Observation`` (the phase, a
one-line summary, and any problem that may end the step); ``decide`` applies the phase bounds to
it (with what a look at the nodes and autoscalers said, a ``Placement``) and says whether, and
with which error, the step must fail now. Neither talks to the API nor
reads the clock, so every branch is tested with plain dictionaries.

The phases, in order: ``submitted`` (the Job exists, no pod yet), ``queued`` (suspended, e.g. by
Kueue), ``scheduling`` (a pod waits for a node), ``starting`` (on a node, image and volumes being
prepared), ``running``, then ``succeeded`` or ``failed``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from k8s_step_operator._errors import (
    AdmissionRejectedError,
    ContainerConfigError,
    DeadlineExceededError,
    ImageError,
    OOMKilledError,
    QueueError,
    StepError,
    StepFailedError,
    UnschedulableError,
)
from k8s_step_operator._job.keys import KUEUE_QUEUE_LABEL
from k8s_step_operator._objects import (
    Condition,
    ContainerStateTerminated,
    Event,
    Job,
    Pod,
    labels_of,
    name_of,
)
from k8s_step_operator._runner.autoscaler import (
    AutoscalerSignal,
    is_autoscaler_event,
    latest_signal,
)
from k8s_step_operator._runner.kueue import WorkloadState
from k8s_step_operator._runner.pods import conditions_by_type, container_statuses

__all__ = [
    "Bounds",
    "Observation",
    "Outcome",
    "Phase",
    "Placement",
    "Problem",
    "decide",
    "observe",
    "reads_events",
]


class Phase(enum.StrEnum):
    """Where a step is."""

    SUBMITTED = "submitted"
    QUEUED = "queued"
    SCHEDULING = "scheduling"
    SCALING_UP = "scaling up"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Problem(enum.StrEnum):
    """Something that keeps a step from progressing; each has its own bound."""

    UNSCHEDULABLE = "unschedulable"
    SCALING_UP = "scaling-up"  # an autoscaler is adding a node: bounded by scale_up_timeout
    IMAGE_INVALID = "image-invalid"  # fails at once: retrying cannot help
    IMAGE_PULL = "image-pull"  # a registry hiccup may pass: bounded wait
    MISSING_CONFIG = "missing-config"  # a Secret/ConfigMap may appear shortly: short grace
    ADMISSION = "admission"  # quota, Pod Security, webhook: the Job cannot create its pod
    QUEUE_REFUSED = "queue-refused"  # Kueue cannot admit it (no LocalQueue, no Kueue): at once


@dataclass(frozen=True)
class QueueContext:
    """What is known of a queued step's queue, besides the Job.

    Attributes:
        workload: The Job's Kueue Workload, once Kueue made it.
        cluster_queue: The LocalQueue's ClusterQueue; ``""`` when the LocalQueue does not exist,
            ``None`` when unknown.
        position: The Workload's position in its LocalQueue (0 is next), where Kueue says.
        kueue_missing: The cluster does not serve Kueue's API.
        waited_without_workload: Seconds the Job has been queued with no Workload yet.
    """

    workload: WorkloadState | None = None
    cluster_queue: str | None = None
    position: int | None = None
    kueue_missing: bool = False
    waited_without_workload: float = 0.0


# Kueue makes a Job's Workload within a second; past this, say that Kueue is not acting.
_NO_WORKLOAD_GRACE = 30.0


@dataclass(frozen=True)
class Outcome:
    """The end of a step, read from the Job's conditions (and its pods for the details)."""

    succeeded: bool
    reason: str = ""
    message: str = ""
    pod: str = ""
    container: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    job_reason: str = ""  # the reason of the Job's own failure condition


@dataclass(frozen=True)
class Observation:
    """A step's state as the latest objects show it."""

    phase: Phase
    summary: str
    pod: str = ""
    container: str = ""
    problem: Problem | None = None
    reason: str = ""
    message: str = ""
    outcome: Outcome | None = None
    queue: str = ""
    autoscaler: AutoscalerSignal | None = None
    node: str = ""


class Bounds(Protocol):
    """Bounds on the phases, in seconds (``None``: unbounded).

    The step's settings (``KubernetesJobStepOperatorSettings``) are the bounds: their fields hold
    every default and range, and nothing copies them.
    """

    @property
    def pending_timeout(self) -> float | None: ...

    @property
    def image_pull_backoff_timeout(self) -> float | None: ...

    @property
    def missing_config_grace(self) -> float: ...

    @property
    def queue_timeout(self) -> float | None: ...

    @property
    def scale_up_timeout(self) -> float | None: ...

    @property
    def active_deadline_seconds(self) -> int | None: ...


@dataclass(frozen=True)
class Placement:
    """What a look at the nodes and the autoscalers says of a pod the scheduler cannot place.

    Attributes:
        never_fits: No current node could ever fit the pod (its size, labels or taints).
        advice: What to change so that a node would fit it.
        autoscaler_may_act: An autoscaler exists that may still add a node that fits (it has
            not said so yet): the pod waits for it, up to scale_up_timeout.
        autoscaler_wait: Instead of scale_up_timeout, how long to wait for an autoscaler that
            may exist (the identity cannot tell) to say something.
    """

    never_fits: bool = False
    advice: str = ""
    autoscaler_may_act: bool = False
    autoscaler_wait: float | None = None


_TRUE = "True"
_IMAGE_INVALID = {"InvalidImageName", "ErrImageNeverPull"}
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"}
_CONFIG = {"CreateContainerConfigError"}
_STARTING = {"ContainerCreating", "PodInitializing"}


def _true(conds: Mapping[str, Condition], kind: str) -> Condition | None:
    c = conds.get(kind)
    return c if c is not None and c.get("status") == _TRUE else None


def _terminated(pod: Pod) -> tuple[str, ContainerStateTerminated] | None:
    """The first container that terminated unsuccessfully, else the first that terminated."""
    done: list[tuple[str, ContainerStateTerminated]] = []
    for cs in container_statuses(pod):
        terminated = cs.get("state", {}).get("terminated")
        if terminated:
            done.append((str(cs.get("name", "")), terminated))
    for n, t in done:
        if t.get("exitCode") not in (0, None):
            return n, t
    return done[0] if done else None


def _failure_outcome(job: Job, pods: Sequence[Pod], cond: Condition) -> Outcome:
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")
    failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
    candidates = failed or list(pods)
    for pod in reversed(candidates):
        term = _terminated(pod)
        if term is not None:
            container, t = term
            code = t.get("exitCode")
            t_reason = str(t.get("reason") or "")
            detail = str(t.get("message") or "").strip()
            # The container's own reason says more than the Job's (BackoffLimitExceeded...),
            # unless it is the generic "Error".
            specific = t_reason not in ("", "Error", "Completed")
            return Outcome(
                succeeded=False,
                reason=t_reason if specific else (reason or t_reason),
                message=detail or message or t_reason,
                pod=name_of(pod),
                container=container,
                exit_code=int(code) if code is not None else None,
                oom_killed=t_reason == "OOMKilled",
                job_reason=reason,
            )
        status = pod.get("status", {})
        if status.get("phase") == "Failed" and status.get("reason"):
            # Rejected by the kubelet before any container ran (UnexpectedAdmissionError, ...).
            return Outcome(
                succeeded=False,
                reason=str(status.get("reason")),
                message=str(status.get("message") or message),
                pod=name_of(pod),
                job_reason=reason,
            )
    return Outcome(succeeded=False, reason=reason, message=message, job_reason=reason)


def observe(
    job: Job,
    pods: Sequence[Pod],
    events: Sequence[Event] = (),
    queue: QueueContext | None = None,
) -> Observation:
    """Read a step's phase and problems from its Job, the Job's pods and their events.

    Args:
        job: The Job, as the API returns it.
        pods: The Job's pods (any order).
        events: Events about the Job and its pods, oldest first.
        queue: Kueue's view of the Job, when it has a queue.

    Returns:
        The observation; ``outcome`` is set once the Job has a terminal condition.
    """
    conds = conditions_by_type(job)
    # The controller sets SuccessCriteriaMet / FailureTarget first and Complete / Failed once
    # every pod has stopped; older servers set only the latter. Either, in any order, decides.
    done = _true(conds, "SuccessCriteriaMet") or _true(conds, "Complete")
    if done is not None:
        return Observation(Phase.SUCCEEDED, "succeeded", outcome=Outcome(succeeded=True))
    failed = _true(conds, "FailureTarget") or _true(conds, "Failed")
    if failed is not None:
        outcome = _failure_outcome(job, pods, failed)
        return Observation(
            Phase.FAILED,
            f"failed: {outcome.reason or 'unknown reason'}",
            pod=outcome.pod,
            container=outcome.container,
            reason=outcome.reason,
            message=outcome.message,
            outcome=outcome,
        )

    labels = labels_of(job)
    queue_name = str(labels.get(KUEUE_QUEUE_LABEL, ""))
    suspended = _true(conds, "Suspended") or job.get("spec", {}).get("suspend") is True
    if suspended:
        return _queued(queue_name, queue)

    active = [
        p
        for p in pods
        if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        and not p.get("metadata", {}).get("deletionTimestamp")
    ]
    if not active:
        rejected = [
            e
            for e in events
            if e.get("reason") == "FailedCreate"
            and e.get("involvedObject", {}).get("kind") == "Job"
        ]
        if rejected and not pods:
            message = str(rejected[-1].get("message") or "")
            return Observation(
                Phase.SUBMITTED,
                f"the Job cannot create its pod: {message}",
                problem=Problem.ADMISSION,
                reason="FailedCreate",
                message=message,
            )
        if pods:
            return Observation(Phase.RUNNING, "pod finished; waiting for the Job's verdict")
        return Observation(Phase.SUBMITTED, "waiting for the Job controller to create a pod")

    pod = active[-1]
    pod_name = name_of(pod)
    pod_conds = conditions_by_type(pod)
    scheduled = pod_conds.get("PodScheduled")
    if not pod.get("spec", {}).get("nodeName"):
        if scheduled is not None and scheduled.get("reason") == "Unschedulable":
            message = str(scheduled.get("message") or "")
            if not message:
                message = _latest_message(events, pod_name, "FailedScheduling")
            signal = latest_signal(events, pod_name)
            if signal is not None and signal.scaling_up:
                return Observation(
                    Phase.SCALING_UP,
                    f"a node is being added: {signal.words}",
                    pod=pod_name,
                    problem=Problem.SCALING_UP,
                    reason="ScalingUp",
                    message=message,
                    autoscaler=signal,
                )
            said = f"; {signal.words}" if signal is not None else ""
            return Observation(
                Phase.SCHEDULING,
                f"unschedulable: {message}{said}",
                pod=pod_name,
                problem=Problem.UNSCHEDULABLE,
                reason="Unschedulable",
                message=message,
                autoscaler=signal,
            )
        return Observation(Phase.SCHEDULING, "waiting for the scheduler", pod=pod_name)

    node = str(pod.get("spec", {}).get("nodeName"))
    for cs in container_statuses(pod):
        waiting = cs.get("state", {}).get("waiting")
        if not waiting:
            continue
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        container = str(cs.get("name", ""))
        problem = (
            Problem.IMAGE_INVALID
            if reason in _IMAGE_INVALID
            else Problem.IMAGE_PULL
            if reason in _IMAGE_PULL
            else Problem.MISSING_CONFIG
            if reason in _CONFIG
            else None
        )
        if problem is not None:
            return Observation(
                Phase.STARTING,
                f"{reason} on {node}: {message}",
                pod=pod_name,
                container=container,
                problem=problem,
                reason=reason,
                message=message,
                node=node,
            )
    running = any("running" in cs.get("state", {}) for cs in container_statuses(pod))
    if running or pod.get("status", {}).get("phase") == "Running":
        return Observation(Phase.RUNNING, f"running on {node}", pod=pod_name, node=node)
    return Observation(Phase.STARTING, f"starting on {node}", pod=pod_name, node=node)


def _queued(name: str, ctx: QueueContext | None) -> Observation:
    """The queued phase, in Kueue's words when its Workload says more than "suspended"."""
    if not name or ctx is None:
        where = f" in LocalQueue {name}" if name else ""
        return Observation(Phase.QUEUED, f"queued{where} (Job suspended)", queue=name)
    if ctx.kueue_missing:
        message = (
            f"queue_name is {name!r} but this cluster does not run Kueue (the kueue.x-k8s.io API "
            "is not served): install Kueue, or leave queue_name unset"
        )
        return _refused(name, message)
    wl = ctx.workload
    if (wl is not None and wl.inadmissible) or ctx.cluster_queue == "":
        said = f"Kueue cannot admit it: {wl.message}" if wl is not None and wl.message else ""
        if ctx.cluster_queue == "":
            said = (said + "; " if said else "") + (
                f"LocalQueue {name} does not exist in this namespace: create it (pointing at a "
                "ClusterQueue), or set queue_name to an existing LocalQueue"
            )
        return _refused(name, said)
    cq = ctx.cluster_queue or (wl.cluster_queue if wl is not None else "")
    where = f"queued in LocalQueue {name}" + (f" (ClusterQueue {cq})" if cq else "")
    if ctx.position is not None:
        where += f", position {ctx.position + 1}"
    if wl is None:
        why = "waiting for Kueue to make its Workload"
        if ctx.waited_without_workload >= _NO_WORKLOAD_GRACE:
            why = (
                f"no Workload after {ctx.waited_without_workload:.0f}s: is Kueue's controller "
                "running?"
            )
    elif wl.admitted:
        why = f"admitted by Kueue to ClusterQueue {wl.cluster_queue}; the Job is resuming"
    else:
        why = wl.message or "waiting for Kueue to admit it"
    if wl is not None and wl.evicted and not wl.admitted:
        why = f"preempted ({wl.evicted}); queued again: {why}"
    return Observation(Phase.QUEUED, f"{where}: {why}", queue=name, message=why)


def _refused(name: str, message: str) -> Observation:
    return Observation(
        Phase.QUEUED,
        f"queued in LocalQueue {name}: {message}",
        problem=Problem.QUEUE_REFUSED,
        reason="Inadmissible",
        message=message,
        queue=name,
    )


def reads_events(obs: Observation) -> bool:
    """Whether events could change this observation; the runner reads a step's events only then.

    ``observe`` reads them for a Job with no pod (the Job controller's ``FailedCreate``) and for
    an unschedulable pod (the scheduler's and the autoscalers' words).
    """
    return obs.phase is Phase.SUBMITTED or obs.problem in (
        Problem.UNSCHEDULABLE,
        Problem.SCALING_UP,
    )


def _latest_message(events: Sequence[Event], name: str, reason: str) -> str:
    """The latest message of the scheduler's (not an autoscaler's) event of that reason."""
    for e in reversed(events):
        if (
            e.get("reason") == reason
            and e.get("involvedObject", {}).get("name") == name
            and not is_autoscaler_event(e)
        ):
            return str(e.get("message") or "")
    return ""


def outcome_error(outcome: Outcome, **facts: Any) -> StepError:
    """The error that reports a failed outcome."""
    base: dict[str, Any] = dict(
        pod=outcome.pod,
        container=outcome.container,
        reason=outcome.reason,
        exit_code=outcome.exit_code,
    )
    base.update(facts)
    if outcome.job_reason == "DeadlineExceeded":
        # The controller kills the pod when the deadline passes: whatever the container's exit
        # code (143, or none yet), the cause is the deadline, and one cause gives one error.
        base["reason"] = "DeadlineExceeded"
        return DeadlineExceededError(outcome.message or "active deadline reached", **base)
    if outcome.oom_killed:
        return OOMKilledError(outcome.message or "container exceeded its memory limit", **base)
    return StepFailedError(outcome.message, **base)


def decide(
    obs: Observation,
    seen_for: float,
    limits: Bounds,
    placement: Placement | None = None,
    **facts: Any,
) -> StepError | None:
    """Whether the step must fail now, given how long its current problem has lasted.

    Args:
        obs: The current observation.
        seen_for: Seconds the current problem (or, for queued and scheduling, the phase) has
            lasted.
        limits: The phase bounds.
        placement: What the nodes and autoscalers say of an unschedulable pod (``None``: not
            looked at: only the bounds decide).
        **facts: Job and namespace names for the error.

    Returns:
        The error to raise, or ``None`` to keep waiting.
    """
    place = placement or Placement()
    never_fits, advice = place.never_fits, place.advice
    autoscaler_may_act, autoscaler_wait = place.autoscaler_may_act, place.autoscaler_wait
    facts = {**facts, "pod": obs.pod, "container": obs.container, "reason": obs.reason}
    if obs.problem is Problem.ADMISSION:
        return AdmissionRejectedError(obs.message, **facts)
    if obs.problem is Problem.QUEUE_REFUSED:
        return QueueError(obs.message, **facts)
    if obs.problem is Problem.IMAGE_INVALID:
        return ImageError(obs.message or obs.reason, **facts)
    if obs.problem is Problem.IMAGE_PULL and _over(seen_for, limits.image_pull_backoff_timeout):
        return ImageError(
            f"{obs.message or obs.reason} (still failing after {seen_for:.0f}s)", **facts
        )
    if obs.problem is Problem.MISSING_CONFIG and _over(seen_for, limits.missing_config_grace):
        return ContainerConfigError(obs.message or obs.reason, **facts)
    if obs.problem is Problem.SCALING_UP and _over(seen_for, limits.scale_up_timeout):
        signal = obs.autoscaler
        return UnschedulableError(
            f"no node after {seen_for:.0f}s of scale-up (scale_up_timeout)"
            + (f": {signal.words}" if signal is not None else ""),
            breakdown=obs.message,
            **facts,
        )
    if obs.problem is Problem.UNSCHEDULABLE:
        signal = obs.autoscaler
        if never_fits and signal is not None and not signal.limited:
            # No current node fits and the autoscaler will add none: waiting cannot help.
            return UnschedulableError(
                f"no node fits and {signal.who} will not add one: {signal.message}"
                + (f" ({advice})" if advice else ""),
                breakdown=obs.message,
                **facts,
            )
        if never_fits and signal is None:
            if not autoscaler_may_act:
                why = f"{advice} (scheduler: {obs.message})" if advice else obs.message
                return UnschedulableError(
                    f"no node could ever fit this pod: {why}", breakdown=obs.message, **facts
                )
            bound = limits.scale_up_timeout if autoscaler_wait is None else autoscaler_wait
            if _over(seen_for, bound):
                which = "scale_up_timeout" if autoscaler_wait is None else "no autoscaler spoke"
                return UnschedulableError(
                    f"no node fits, and no autoscaler added one within {seen_for:.0f}s "
                    f"({which}): {advice or obs.message}",
                    breakdown=obs.message,
                    **facts,
                )
        if _over(seen_for, limits.pending_timeout):
            limited = f" ({signal.words})" if signal is not None else ""
            return UnschedulableError(
                f"still unschedulable after {seen_for:.0f}s (pending timeout): "
                f"{obs.message}{limited}",
                breakdown=obs.message,
                **facts,
            )
    if (
        obs.phase is Phase.SCHEDULING
        and obs.problem is None
        and _over(seen_for, limits.pending_timeout)
    ):
        return UnschedulableError(f"not scheduled after {seen_for:.0f}s (pending timeout)", **facts)
    if obs.phase is Phase.QUEUED and _over(seen_for, limits.queue_timeout):
        why = f": {obs.message}" if obs.message else ""
        return DeadlineExceededError(
            f"still queued after {seen_for:.0f}s (queue_timeout)"
            f"{f' in LocalQueue {obs.queue}' if obs.queue else ''}{why}",
            **facts,
        )
    return None


def _over(seen_for: float, bound: float | None) -> bool:
    return bound is not None and seen_for >= bound
