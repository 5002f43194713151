"""Why a step is where it is: a pure reading of its Job, pods and events.

Diagnosis is data. ``observe`` turns the latest objects into an ``Observation`` (the phase, a
one-line summary, and any problem that may end the step); ``decide`` applies the phase bounds to
it (with what a look at the nodes and autoscalers said, a ``Placement``) and says whether, and
with which error, the step must fail now. Neither talks to the API nor
reads the clock, so every branch is tested with plain dictionaries.

The phases, in order: ``submitted`` (the Job exists, no pod yet), ``queued`` (suspended, e.g. by
Kueue), ``scheduling`` (a pod waits for a node), ``starting`` (on a node, image and volumes being
prepared), ``running``, then ``succeeded`` or ``failed``.

A step on several nodes is one Indexed Job of N ranks, read rank by rank (``RankView``, the
newest pod of each completion index). The step is only as far as its least advanced rank: it
runs when every rank runs, and until then the summary counts them ("3 of 4 ranks scheduled;
rank 3: unschedulable: ..."). A problem of any rank is the step's (the most serious first). When
the Job fails, the rank that failed first is the culprit (not the ranks the Job controller
stopped because of it), and the outcome names it. The step's verdict does not wait for the Job
controller's (which batches pod updates for a second): a rank that failed on its own, in a Job
whose first counted failure fails it (``backoffLimit`` 0) and whose pod failure policy does not
ignore that failure, is the step's failure as soon as it is seen; the controller then fails the
Job and stops the other ranks by the same rules.
"""

from __future__ import annotations

import enum
import re
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
from k8s_step_operator._job.ranks import ranks_of
from k8s_step_operator._objects import (
    Condition,
    ContainerStateTerminated,
    Event,
    Job,
    Pod,
    PodFailurePolicyRule,
    labels_of,
    name_of,
)
from k8s_step_operator._runner.autoscaler import (
    UNSEEN,
    AutoscalerSignal,
    is_autoscaler_event,
    latest_signals,
)
from k8s_step_operator._runner.image_pull import container_image, pull_cause, pull_will_not_improve
from k8s_step_operator._runner.kueue import QueueState, WorkloadState, never_admissible
from k8s_step_operator._runner.pods import conditions_by_type, container_statuses, rank_of

__all__ = [
    "Bounds",
    "Observation",
    "Outcome",
    "Phase",
    "Placement",
    "Problem",
    "RankView",
    "decide",
    "job_failed",
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
    # A pull that will not get better (no such host, connection refused, manifest unknown,
    # access denied): fails after a short grace (IMAGE_UNAVAILABLE_GRACE).
    IMAGE_UNAVAILABLE = "image-unavailable"
    MISSING_CONFIG = "missing-config"  # a Secret/ConfigMap may appear shortly: short grace
    ADMISSION = "admission"  # quota, Pod Security, webhook: the Job cannot create its pod
    QUEUE_REFUSED = "queue-refused"  # Kueue cannot admit it (no LocalQueue, no Kueue): at once
    # The ClusterQueue is inactive for its configuration (a missing ResourceFlavor or admission
    # check), which may be being applied: bounded by missing_config_grace, then fails.
    QUEUE_INACTIVE = "queue-inactive"


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
        local_queue_state: The LocalQueue's state, read while the Workload is inadmissible
            (``None``: not read, or not readable).
        cluster_queue_state: The ClusterQueue's, likewise.
    """

    workload: WorkloadState | None = None
    cluster_queue: str | None = None
    position: int | None = None
    kueue_missing: bool = False
    waited_without_workload: float = 0.0
    local_queue_state: QueueState | None = None
    cluster_queue_state: QueueState | None = None


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
    rank: int | None = None  # the failed pod's rank, when the step runs on several nodes


@dataclass(frozen=True)
class RankView:
    """One rank of a step on several nodes, as its newest pod shows it.

    Attributes:
        rank: The rank (the pod's completion index).
        phase: Where the rank is (``submitted``: its pod is not created yet; ``succeeded``:
            it finished).
        summary: Why, in one line.
        pod: Its newest pod (``""`` before the Job controller made one).
        node: The node of that pod, once scheduled.
        problem: What keeps the rank from progressing, if anything.
        replaced: Why an earlier pod of the rank was disrupted (it was replaced), or ``""``.
    """

    rank: int
    phase: Phase
    summary: str
    pod: str = ""
    node: str = ""
    problem: Problem | None = None
    replaced: str = ""


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
    ranks: tuple[RankView, ...] = ()  # a step on several nodes: every rank, in order
    # What each autoscaler last said about the pod (``autoscaler`` is the one that matters most).
    autoscalers: tuple[AutoscalerSignal, ...] = ()
    # How many times the problem was reported (a pull's attempts); 0: not counted.
    count: int = 0


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
        may_act: The autoscalers present that may still add a node that fits (``karpenter``
            when one of its NodePools admits the pod, ``cluster-autoscaler``, or ``unseen``: one
            the identity cannot look for). The pod waits until each has said no, up to
            scale_up_timeout; "never" needs every one of them to agree.
        autoscaler_wait: Instead of scale_up_timeout, how long to wait for an autoscaler that
            may exist (the identity cannot tell) to say something.
        gang: For a step on several nodes whose ranks can never all be placed although one
            could (too few nodes of the model, no domain of its topology level large enough):
            why, and what to change. ``never_fits`` is set with it.
    """

    never_fits: bool = False
    advice: str = ""
    may_act: frozenset[str] = frozenset()
    autoscaler_wait: float | None = None
    gang: str = ""

    @property
    def autoscaler_may_act(self) -> bool:
        """Some autoscaler present may still add a node for the pod."""
        return bool(self.may_act)


_TRUE = "True"
_IMAGE_INVALID = {"InvalidImageName", "ErrImageNeverPull"}
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"}
_CONFIG = {"CreateContainerConfigError"}
_STARTING = {"ContainerCreating", "PodInitializing"}


def job_failed(job: Job) -> Condition | None:
    """The Job's failure condition: ``FailureTarget`` (set first) or ``Failed``, else ``None``."""
    conds = conditions_by_type(job)
    return _true(conds, "FailureTarget") or _true(conds, "Failed")


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


def _finished_at(pod: Pod) -> str:
    times = [
        str(t.get("finishedAt") or "")
        for cs in container_statuses(pod)
        if (t := cs.get("state", {}).get("terminated"))
    ]
    return min((t for t in times if t), default="~")  # "~" sorts after every timestamp


def _disrupted(pod: Pod) -> Condition | None:
    return _true(conditions_by_type(pod), "DisruptionTarget")


def _culprits(pods: Sequence[Pod]) -> list[Pod]:
    """The failed pods of a Job of several ranks, the one that failed the Job last in the list.

    The Job controller stops the other ranks once one has failed: they are being deleted (and
    terminate with 143) or are gone. The first rank that failed on its own is the cause; a rank
    disrupted (preempted, evicted) comes next; the ranks stopped by the controller last.
    """
    failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"] or list(pods)

    def blame(pod: Pod) -> tuple[int, str]:
        deleting = bool(pod.get("metadata", {}).get("deletionTimestamp"))
        kind = 0 if not deleting and _disrupted(pod) is None else 1 if _disrupted(pod) else 2
        return (kind, _finished_at(pod))

    return sorted(failed, key=blame, reverse=True)


def _failed_rank(job: Job, pods: Sequence[Pod]) -> Pod | None:
    """The rank whose failure fails the Job, before the Job controller says so (or ``None``).

    Only a pod that failed on its own (not being deleted: the controller or an eviction stops
    it otherwise), in a Job failed by its first counted failure, and not ignored by the pod
    failure policy.
    """
    spec = job.get("spec", {})
    if spec.get("backoffLimit", 6) != 0:
        return None
    rules = spec.get("podFailurePolicy", {}).get("rules") or []
    failed = [
        p
        for p in pods
        if p.get("status", {}).get("phase") == "Failed"
        and not p.get("metadata", {}).get("deletionTimestamp")
        and _policy_action(rules, p) != "Ignore"
    ]
    return min(failed, key=_finished_at) if failed else None


def _policy_action(rules: Sequence[PodFailurePolicyRule], pod: Pod) -> str:
    """What the Job's pod failure policy does with a failed pod (``Count`` when no rule says)."""
    conds = conditions_by_type(pod)
    codes = {
        str(cs.get("name", "")): int(t.get("exitCode") or 0)
        for cs in container_statuses(pod)
        if (t := cs.get("state", {}).get("terminated"))
    }
    for rule in rules:
        for wanted in rule.get("onPodConditions") or []:
            cond = conds.get(str(wanted.get("type")))
            if cond is not None and cond.get("status") == wanted.get("status", _TRUE):
                return str(rule.get("action"))
        on_codes = rule.get("onExitCodes")
        if on_codes:
            container = on_codes.get("containerName")
            values = set(on_codes.get("values") or [])
            inside = on_codes.get("operator") == "In"
            for name, code in codes.items():
                if (container and name != container) or code == 0:
                    continue
                if (code in values) == inside:
                    return str(rule.get("action"))
    return "Count"


def _failure_outcome(job: Job, pods: Sequence[Pod], cond: Condition) -> Outcome:
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")
    several = ranks_of(job) > 1
    if several:
        candidates = _culprits(pods)
    else:
        failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"]
        candidates = failed or list(pods)
    for pod in reversed(candidates):
        rank = rank_of(pod) if several else None
        disrupted = _disrupted(pod) if several else None
        if disrupted is not None:
            why = str(disrupted.get("message") or disrupted.get("reason") or "")
            return Outcome(
                succeeded=False,
                reason=str(disrupted.get("reason") or "DisruptionTarget"),
                message=f"rank {rank} was disrupted: {why}",
                pod=name_of(pod),
                job_reason=reason,
                rank=rank,
            )
        term = _terminated(pod)
        if term is not None:
            container, t = term
            code = t.get("exitCode")
            t_reason = str(t.get("reason") or "")
            detail = str(t.get("message") or "").strip()
            # The container's own reason says more than the Job's (BackoffLimitExceeded...),
            # unless it is the generic "Error".
            specific = t_reason not in ("", "Error", "Completed")
            if several:
                said = f"exited with code {code}" if code is not None else "ended"
                message = f"rank {rank} {said}; the step's other ranks are stopped"
            return Outcome(
                succeeded=False,
                reason=t_reason if specific else (reason or t_reason),
                message=detail or message or t_reason,
                pod=name_of(pod),
                container=container,
                exit_code=int(code) if code is not None else None,
                oom_killed=t_reason == "OOMKilled",
                job_reason=reason,
                rank=rank,
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
                rank=rank,
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
    failed = job_failed(job)
    if failed is not None:
        outcome = _failure_outcome(job, pods, failed)
        who = f"rank {outcome.rank} " if outcome.rank is not None else ""
        return Observation(
            Phase.FAILED,
            f"failed: {who}{outcome.reason or 'unknown reason'}",
            pod=outcome.pod,
            container=outcome.container,
            reason=outcome.reason,
            message=outcome.message,
            outcome=outcome,
        )

    early = _failed_rank(job, pods) if ranks_of(job) > 1 else None
    if early is not None:
        cond: Condition = {"type": "FailureTarget", "status": "True"}
        outcome = _failure_outcome(job, [early], cond)
        return Observation(
            Phase.FAILED,
            f"failed: rank {outcome.rank} {outcome.reason or 'unknown reason'}",
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
    ranks = ranks_of(job)
    if ranks > 1 and active:
        return _observe_ranks(ranks, active, pods, events)
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
            finished = "ranks finished" if ranks > 1 else "pod finished"
            return Observation(Phase.RUNNING, f"{finished}; waiting for the Job's verdict")
        return Observation(Phase.SUBMITTED, "waiting for the Job controller to create a pod")
    return _observe_pod(active[-1], events)


def _observe_pod(pod: Pod, events: Sequence[Event]) -> Observation:
    """Where one (active) pod is: scheduling, scaling up, starting or running, and why."""
    pod_name = name_of(pod)
    pod_conds = conditions_by_type(pod)
    scheduled = pod_conds.get("PodScheduled")
    if not pod.get("spec", {}).get("nodeName"):
        if scheduled is not None and scheduled.get("reason") == "Unschedulable":
            message = str(scheduled.get("message") or "")
            if not message:
                message = _latest_message(events, pod_name, "FailedScheduling")
            signals = latest_signals(events, pod_name)
            # A scale-up by any autoscaler is a node on its way, whatever another one said.
            adding = [s for s in signals if s.scaling_up]
            if adding:
                return Observation(
                    Phase.SCALING_UP,
                    f"a node is being added: {adding[-1].words}",
                    pod=pod_name,
                    problem=Problem.SCALING_UP,
                    reason="ScalingUp",
                    message=message,
                    autoscaler=adding[-1],
                    autoscalers=signals,
                )
            said = "".join(f"; {s.words}" for s in signals)
            return Observation(
                Phase.SCHEDULING,
                f"unschedulable: {message}{said}",
                pod=pod_name,
                problem=Problem.UNSCHEDULABLE,
                reason="Unschedulable",
                message=message,
                autoscaler=signals[-1] if signals else None,
                autoscalers=signals,
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
        if problem is Problem.IMAGE_PULL:
            return _pull_failing(pod, pod_name, container, node, reason, message, events)
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


# The order in which a rank's problem becomes the step's: what fails soonest first.
_PROBLEM_ORDER = (
    Problem.IMAGE_INVALID,
    Problem.MISSING_CONFIG,
    Problem.IMAGE_PULL,
    Problem.UNSCHEDULABLE,
    Problem.SCALING_UP,
)
# How far a rank is; the step is as far as its least advanced rank.
_PROGRESS = {
    Phase.SUBMITTED: 0,
    Phase.SCHEDULING: 1,
    Phase.SCALING_UP: 1,
    Phase.STARTING: 2,
    Phase.RUNNING: 3,
    Phase.SUCCEEDED: 4,
}


def _observe_ranks(
    ranks: int, active: Sequence[Pod], pods: Sequence[Pod], events: Sequence[Event]
) -> Observation:
    """The step on ``ranks`` nodes as its ranks show it: the least advanced one leads."""
    newest: dict[int, Pod] = {}
    for pod in active:  # the Job controller keeps one active pod per index; keep the newest
        rank = rank_of(pod)
        if rank not in newest or _created(pod) >= _created(newest[rank]):
            newest[rank] = pod
    succeeded = {rank_of(p) for p in pods if p.get("status", {}).get("phase") == "Succeeded"} - set(
        newest
    )
    replaced: dict[int, str] = {}
    for pod in pods:
        rank = rank_of(pod)
        cond = _disrupted(pod)
        if cond is not None and rank in newest and name_of(newest[rank]) != name_of(pod):
            replaced[rank] = str(cond.get("reason") or "DisruptionTarget")
    views: list[RankView] = []
    by_rank: dict[int, Observation] = {}
    for rank in range(ranks):
        if rank in newest:
            obs = _observe_pod(newest[rank], events)
            by_rank[rank] = obs
            views.append(
                RankView(
                    rank,
                    obs.phase,
                    obs.summary,
                    pod=obs.pod,
                    node=obs.node,
                    problem=obs.problem,
                    replaced=replaced.get(rank, ""),
                )
            )
        elif rank in succeeded:
            views.append(RankView(rank, Phase.SUCCEEDED, "finished"))
        else:
            views.append(RankView(rank, Phase.SUBMITTED, "waiting for the Job controller"))
    scheduled = sum(1 for v in views if v.node or v.phase is Phase.SUCCEEDED)
    running = sum(1 for v in views if v.phase in (Phase.RUNNING, Phase.SUCCEEDED))
    lead = min(views, key=lambda v: (_PROGRESS[v.phase], v.rank))
    troubled = sorted(
        (v for v in views if v.problem is not None),
        key=lambda v: _PROBLEM_ORDER.index(v.problem) if v.problem in _PROBLEM_ORDER else 9,
    )
    focus = troubled[0] if troubled else lead
    phase = lead.phase if lead.phase is not Phase.SUCCEEDED else Phase.RUNNING
    if troubled and focus.phase is Phase.SCALING_UP and phase is not Phase.SUBMITTED:
        phase = Phase.SCALING_UP
    if scheduled < ranks:
        count = f"{scheduled} of {ranks} ranks scheduled"
    elif running < ranks:
        count = f"{ranks} of {ranks} ranks scheduled, {running} running"
    else:
        nodes = ", ".join(v.node or "-" for v in views)
        count = f"{ranks} ranks running on {nodes}"
    all_running = running == ranks and not troubled
    summary = count if all_running else f"{count}; rank {focus.rank}: {focus.summary}"
    notes = [
        f"rank {r} replaced after a disruption ({why})"
        for r, why in sorted(replaced.items())
        if views[r].phase is not Phase.RUNNING
    ]
    if notes:
        summary += "; " + "; ".join(notes)
    detail = by_rank.get(focus.rank)
    return Observation(
        phase,
        summary,
        pod=focus.pod or views[0].pod,
        container=detail.container if detail is not None else "",
        problem=focus.problem,
        reason=detail.reason if detail is not None else "",
        message=detail.message if detail is not None else "",
        autoscaler=detail.autoscaler if detail is not None else None,
        node=views[0].node,
        ranks=tuple(views),
    )


def _created(pod: Pod) -> str:
    return str(pod.get("metadata", {}).get("creationTimestamp") or "")


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
    cq = ctx.cluster_queue or (wl.cluster_queue if wl is not None else "")
    where = f"queued in LocalQueue {name}" + (f" (ClusterQueue {cq})" if cq else "")
    if ctx.cluster_queue == "":
        said = f"Kueue cannot admit it: {wl.message}" if wl is not None and wl.message else ""
        said = (said + "; " if said else "") + (
            f"LocalQueue {name} does not exist in this namespace: create it (pointing at a "
            "ClusterQueue), or set queue_name to an existing LocalQueue"
        )
        return _refused(name, said)
    if wl is not None and wl.inadmissible:
        return _inadmissible(name, where, wl, ctx)
    if wl is not None and not wl.admitted and wl.waiting_reason == "Pending":
        never = never_admissible(wl.message, cq)
        if never:
            quota = (
                "; ask for at most that much, or have the ClusterQueue's quota raised"
                if "requested" in never
                else ""
            )
            return _refused(name, f"Kueue can never admit it: {never}{quota} (Kueue: {wl.message})")
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


def _inadmissible(name: str, where: str, wl: WorkloadState, ctx: QueueContext) -> Observation:
    """A Workload Kueue will not admit now: a paused queue waits, a broken one gets a grace."""
    states = [s for s in (ctx.local_queue_state, ctx.cluster_queue_state) if s is not None]
    stopped = next((s for s in states if s.stopped), None)
    if stopped is not None:
        why = (
            f"{stopped.words()}: Kueue keeps the step and admits it when the queue resumes "
            "(queue_timeout bounds the wait)"
        )
        return Observation(Phase.QUEUED, f"{where}: {why}", queue=name, message=why)
    # A LocalQueue is inactive too while its ClusterQueue is ("ClusterQueueIsInactive"): the
    # ClusterQueue says why.
    broken = next(
        (
            s
            for s in (ctx.cluster_queue_state, ctx.local_queue_state)
            if s is not None and s.misconfigured and s.reason != "ClusterQueueIsInactive"
        ),
        None,
    )
    if broken is not None:
        message = f"Kueue cannot admit it: {broken.words()}"
        return Observation(
            Phase.QUEUED,
            f"{where}: {message}",
            problem=Problem.QUEUE_INACTIVE,
            reason=broken.reason or "Inactive",
            message=message,
            queue=name,
        )
    if _STOPPED.search(wl.message):
        # Kueue's own words for a paused LocalQueue, whether or not its status is readable.
        why = (
            f"Kueue: {wl.message}: Kueue keeps the step and admits it when the queue resumes "
            "(queue_timeout bounds the wait)"
        )
        return Observation(Phase.QUEUED, f"{where}: {why}", queue=name, message=why)
    if _INACTIVE.search(wl.message) and not any(s.active is not None for s in states):
        # Kueue keeps such Workloads; without the queue's status a pause and a broken queue look
        # alike, and a pause is routine: wait, bounded by queue_timeout.
        why = (
            f"Kueue: {wl.message} (the queue's status is not readable: paused, or misconfigured; "
            "`k8s-step-operator doctor` shows it)"
        )
        return Observation(Phase.QUEUED, f"{where}: {why}", queue=name, message=why)
    return _refused(name, f"Kueue cannot admit it: {wl.message or wl.waiting_reason}")


_INACTIVE = re.compile(r"(ClusterQueue|LocalQueue) \S+ is inactive")
_STOPPED = re.compile(r"LocalQueue \S+ is stopped")


def _refused(name: str, message: str) -> Observation:
    return Observation(
        Phase.QUEUED,
        f"queued in LocalQueue {name}: {message}",
        problem=Problem.QUEUE_REFUSED,
        reason="Inadmissible",
        message=message,
        queue=name,
    )


# A pull that will not get better fails after this long (the registry may be starting, a tag
# being pushed, a pull Secret being created), never later than image_pull_backoff_timeout.
IMAGE_UNAVAILABLE_GRACE = 30.0


def _pull_failing(
    pod: Pod,
    pod_name: str,
    container: str,
    node: str,
    reason: str,
    message: str,
    events: Sequence[Event],
) -> Observation:
    """A failing pull: its cause, its attempts, and whether waiting may help.

    The summary is the same whether the kubelet is pulling (ErrImagePull) or backing off
    (ImagePullBackOff), so that it is said once, not at every retry.
    """
    cause, attempts = pull_cause(pod_name, reason, message, events)
    image = container_image(pod, container)
    permanent = pull_will_not_improve(cause)
    what = f"image {image}" if image else "the image"
    return Observation(
        Phase.STARTING,
        f"{what} cannot be pulled on {node}: {cause}",
        pod=pod_name,
        container=container,
        problem=Problem.IMAGE_UNAVAILABLE if permanent else Problem.IMAGE_PULL,
        # One cause, one error: not ErrImagePull or ImagePullBackOff by the moment it is read.
        reason="ErrImagePull" if reason == "ImagePullBackOff" else reason,
        message=cause,
        node=node,
        count=attempts,
    )


def reads_events(obs: Observation) -> bool:
    """Whether events could change this observation; the runner reads a step's events only then.

    ``observe`` reads them for a Job with no pod (the Job controller's ``FailedCreate``), for
    an unschedulable pod (the scheduler's and the autoscalers' words) and for a failing pull (the
    kubelet's attempts, and its cause when the container's status has none).
    """
    return obs.phase is Phase.SUBMITTED or obs.problem in (
        Problem.UNSCHEDULABLE,
        Problem.SCALING_UP,
        Problem.IMAGE_PULL,
        Problem.IMAGE_UNAVAILABLE,
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
        rank=outcome.rank,
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
    autoscaler_wait = place.autoscaler_wait
    facts = {**facts, "pod": obs.pod, "container": obs.container, "reason": obs.reason}
    rank = next((v.rank for v in obs.ranks if obs.pod and v.pod == obs.pod), None)
    if rank is not None:
        facts["rank"] = rank
    if obs.problem is Problem.ADMISSION:
        return AdmissionRejectedError(obs.message, **facts)
    if obs.problem is Problem.QUEUE_REFUSED:
        return QueueError(obs.message, **facts)
    if obs.problem is Problem.QUEUE_INACTIVE and _over(seen_for, limits.missing_config_grace):
        return QueueError(
            f"{obs.message} (still after {seen_for:.0f}s, missing_config_grace)", **facts
        )
    if obs.problem is Problem.IMAGE_INVALID:
        return ImageError(obs.message or obs.reason, **facts)
    if obs.problem is Problem.IMAGE_UNAVAILABLE and _over(
        seen_for, unavailable_image_bound(limits)
    ):
        return ImageError(
            f"{obs.message or obs.reason} (will not get better: {_attempts(obs)}failing for "
            f"{seen_for:.0f}s)",
            **facts,
        )
    if obs.problem is Problem.IMAGE_PULL and _over(seen_for, limits.image_pull_backoff_timeout):
        return ImageError(
            f"{obs.message or obs.reason} (still failing after {seen_for:.0f}s, "
            f"{_attempts(obs)}image_pull_backoff_timeout)",
            **facts,
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
        said = obs.autoscalers or ((signal,) if signal is not None else ())
        refused = [s for s in said if not s.scaling_up and not s.limited]
        limited = any(s.limited for s in said)
        # Each autoscaler present that may act must have said no; one that spoke is present, and
        # an unseen one counts as answered once any autoscaler spoke.
        waiting_on = set(place.may_act) - {s.source for s in refused}
        if said:
            waiting_on.discard(UNSEEN)
        if never_fits and not limited and refused and not waiting_on:
            # No current node fits and no autoscaler will add one: waiting cannot help.
            if len(refused) == 1:
                nobody = f"{refused[0].who} will not add one: {refused[0].message}"
            else:
                nobody = (
                    f"neither {' nor '.join(s.who for s in refused)} will add one: "
                    + "; ".join(s.words for s in refused)
                )
            head = f"{place.gang}; " if place.gang else "no node fits and "
            return UnschedulableError(
                f"{head}{nobody}" + (f" ({advice})" if advice and not place.gang else ""),
                breakdown=obs.message,
                **facts,
            )
        if never_fits and not limited:
            if not waiting_on:
                if place.gang:
                    return UnschedulableError(
                        f"{place.gang} ({obs.summary})", breakdown=obs.message, **facts
                    )
                why = f"{advice} (scheduler: {obs.message})" if advice else obs.message
                return UnschedulableError(
                    f"no node could ever fit this pod: {why}", breakdown=obs.message, **facts
                )
            bound = limits.scale_up_timeout if autoscaler_wait is None else autoscaler_wait
            if _over(seen_for, bound):
                which = "scale_up_timeout" if autoscaler_wait is None else "no autoscaler spoke"
                return UnschedulableError(
                    f"no node fits, and no autoscaler added one within {seen_for:.0f}s "
                    f"({which}): {place.gang or advice or obs.message}",
                    breakdown=obs.message,
                    **facts,
                )
        if _over(seen_for, limits.pending_timeout):
            words = f" ({'; '.join(s.words for s in said)})" if said else ""
            what = obs.summary if obs.ranks else obs.message
            return UnschedulableError(
                f"still unschedulable after {seen_for:.0f}s (pending timeout): {what}{words}",
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


def unavailable_image_bound(limits: Bounds) -> float:
    """How long a pull that will not get better may fail: a short grace, or the pull bound."""
    bound = limits.image_pull_backoff_timeout
    return IMAGE_UNAVAILABLE_GRACE if bound is None else min(IMAGE_UNAVAILABLE_GRACE, bound)


def _attempts(obs: Observation) -> str:
    return f"{obs.count} attempts, " if obs.count > 1 else ""


def _over(seen_for: float, bound: float | None) -> bool:
    return bound is not None and seen_for >= bound
