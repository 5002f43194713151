"""Why a step is where it is: a pure reading of its Job, pods and events.

Diagnosis is data. ``observe`` turns the latest objects into an ``Observation`` (the phase, a
one-line summary, and any problem that may end the step); ``decide`` applies the phase bounds to
it and says whether, and with which error, the step must fail now. Neither talks to the API nor
reads the clock, so every branch is tested with plain dictionaries.

The phases, in order: ``submitted`` (the Job exists, no pod yet), ``queued`` (suspended, e.g. by
Kueue), ``scheduling`` (a pod waits for a node), ``starting`` (on a node, image and volumes being
prepared), ``running``, then ``succeeded`` or ``failed``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from k8s_step_operator._errors import (
    AdmissionRejectedError,
    ContainerConfigError,
    DeadlineExceededError,
    ImageError,
    OOMKilledError,
    StepError,
    StepFailedError,
    UnschedulableError,
)
from k8s_step_operator._job.keys import LABEL_QUEUE_NAME
from k8s_step_operator._runner.pods import container_statuses

__all__ = [
    "Bounds",
    "Observation",
    "Outcome",
    "Phase",
    "Problem",
    "decide",
    "fits_somewhere",
    "observe",
]

Obj = Mapping[str, Any]


class Phase(enum.StrEnum):
    """Where a step is."""

    SUBMITTED = "submitted"
    QUEUED = "queued"
    SCHEDULING = "scheduling"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Problem(enum.StrEnum):
    """Something that keeps a step from progressing; each has its own bound."""

    UNSCHEDULABLE = "unschedulable"
    IMAGE_INVALID = "image-invalid"  # fails at once: retrying cannot help
    IMAGE_PULL = "image-pull"  # a registry hiccup may pass: bounded wait
    MISSING_CONFIG = "missing-config"  # a Secret/ConfigMap may appear shortly: short grace
    ADMISSION = "admission"  # quota, Pod Security, webhook: the Job cannot create its pod


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


@dataclass
class Timers:
    """When each problem was first seen (monotonic seconds); kept by the caller between calls."""

    since: dict[Problem, float] = field(default_factory=dict)

    def track(self, problem: Problem | None, now: float) -> float:
        """Record ``problem`` as current; returns for how long it has been seen."""
        for p in list(self.since):
            if p is not problem:
                del self.since[p]
        if problem is None:
            return 0.0
        start = self.since.setdefault(problem, now)
        return now - start


_TRUE = "True"
_IMAGE_INVALID = {"InvalidImageName", "ErrImageNeverPull"}
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"}
_CONFIG = {"CreateContainerConfigError"}
_STARTING = {"ContainerCreating", "PodInitializing"}


def _conditions(obj: Obj) -> dict[str, Mapping[str, Any]]:
    return {
        str(c.get("type")): c
        for c in ((obj.get("status") or {}).get("conditions") or [])
        if isinstance(c, Mapping)
    }


def _true(conds: Mapping[str, Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    c = conds.get(kind)
    return c if c is not None and c.get("status") == _TRUE else None


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _terminated(pod: Obj) -> tuple[str, Mapping[str, Any]] | None:
    """The first container that terminated unsuccessfully, else the first that terminated."""
    done: list[tuple[str, Mapping[str, Any]]] = []
    for cs in container_statuses(pod):
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            done.append((str(cs.get("name", "")), terminated))
    for n, t in done:
        if t.get("exitCode") not in (0, None):
            return n, t
    return done[0] if done else None


def _failure_outcome(job: Obj, pods: Sequence[Obj], cond: Mapping[str, Any]) -> Outcome:
    reason = str(cond.get("reason") or "")
    message = str(cond.get("message") or "")
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
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
                pod=_name(pod),
                container=container,
                exit_code=int(code) if code is not None else None,
                oom_killed=t_reason == "OOMKilled",
                job_reason=reason,
            )
        status = pod.get("status") or {}
        if status.get("phase") == "Failed" and status.get("reason"):
            # Rejected by the kubelet before any container ran (UnexpectedAdmissionError, ...).
            return Outcome(
                succeeded=False,
                reason=str(status.get("reason")),
                message=str(status.get("message") or message),
                pod=_name(pod),
                job_reason=reason,
            )
    return Outcome(succeeded=False, reason=reason, message=message, job_reason=reason)


def observe(job: Obj, pods: Sequence[Obj], events: Sequence[Obj] = ()) -> Observation:
    """Read a step's phase and problems from its Job, the Job's pods and their events.

    Args:
        job: The Job, as the API returns it.
        pods: The Job's pods (any order).
        events: Events about the Job and its pods, oldest first.

    Returns:
        The observation; ``outcome`` is set once the Job has a terminal condition.
    """
    conds = _conditions(job)
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

    labels = (job.get("metadata") or {}).get("labels") or {}
    queue = str(labels.get(LABEL_QUEUE_NAME, ""))
    suspended = _true(conds, "Suspended") or (job.get("spec") or {}).get("suspend") is True
    if suspended:
        where = f" in LocalQueue {queue}" if queue else ""
        return Observation(Phase.QUEUED, f"queued{where} (Job suspended)", queue=queue)

    active = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    if not active:
        rejected = [
            e
            for e in events
            if e.get("reason") == "FailedCreate"
            and (e.get("involvedObject") or {}).get("kind") == "Job"
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
    pod_name = _name(pod)
    pod_conds = _conditions(pod)
    scheduled = pod_conds.get("PodScheduled")
    if not (pod.get("spec") or {}).get("nodeName"):
        if scheduled is not None and scheduled.get("reason") == "Unschedulable":
            message = str(scheduled.get("message") or "")
            if not message:
                message = _latest_message(events, pod_name, "FailedScheduling")
            return Observation(
                Phase.SCHEDULING,
                f"unschedulable: {message}",
                pod=pod_name,
                problem=Problem.UNSCHEDULABLE,
                reason="Unschedulable",
                message=message,
            )
        return Observation(Phase.SCHEDULING, "waiting for the scheduler", pod=pod_name)

    node = str((pod.get("spec") or {}).get("nodeName"))
    for cs in container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting")
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
            )
    running = any("running" in (cs.get("state") or {}) for cs in container_statuses(pod))
    if running or (pod.get("status") or {}).get("phase") == "Running":
        return Observation(Phase.RUNNING, f"running on {node}", pod=pod_name)
    return Observation(Phase.STARTING, f"starting on {node}", pod=pod_name)


def _latest_message(events: Sequence[Obj], name: str, reason: str) -> str:
    for e in reversed(events):
        if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == name:
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
    *,
    never_fits: bool = False,
    **facts: Any,
) -> StepError | None:
    """Whether the step must fail now, given how long its current problem has lasted.

    Args:
        obs: The current observation.
        seen_for: Seconds the current problem (or, for queued and scheduling, the phase) has
            lasted.
        limits: The phase bounds.
        never_fits: A look at the nodes showed that no node could ever fit the pod.
        **facts: Job and namespace names for the error.

    Returns:
        The error to raise, or ``None`` to keep waiting.
    """
    facts = {**facts, "pod": obs.pod, "container": obs.container, "reason": obs.reason}
    if obs.problem is Problem.ADMISSION:
        return AdmissionRejectedError(obs.message, **facts)
    if obs.problem is Problem.IMAGE_INVALID:
        return ImageError(obs.message or obs.reason, **facts)
    if obs.problem is Problem.IMAGE_PULL and _over(seen_for, limits.image_pull_backoff_timeout):
        return ImageError(
            f"{obs.message or obs.reason} (still failing after {seen_for:.0f}s)", **facts
        )
    if obs.problem is Problem.MISSING_CONFIG and _over(seen_for, limits.missing_config_grace):
        return ContainerConfigError(obs.message or obs.reason, **facts)
    if obs.problem is Problem.UNSCHEDULABLE:
        if never_fits:
            return UnschedulableError(
                f"no node could ever fit this pod: {obs.message}", breakdown=obs.message, **facts
            )
        if _over(seen_for, limits.pending_timeout):
            return UnschedulableError(
                f"still unschedulable after {seen_for:.0f}s (pending timeout): {obs.message}",
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
        return DeadlineExceededError(
            f"still queued after {seen_for:.0f}s{f' in {obs.queue}' if obs.queue else ''}",
            **facts,
        )
    return None


def _over(seen_for: float, bound: float | None) -> bool:
    return bound is not None and seen_for >= bound


# -- the preflight fit check ---------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?([a-zA-Z]*)$")
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``500m``, ``16Gi``, ``8``) as a number."""
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(3) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number = float(m.group(1) + (m.group(2) or ""))
    return number * _SUFFIX[m.group(3)]


def _tolerates(tolerations: Sequence[Obj], taint: Obj) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _matches_expression(labels: Mapping[str, str], expr: Obj) -> bool:
    key, op = str(expr.get("key")), str(expr.get("operator"))
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return True  # Gt / Lt: not judged here; never rule a node out on what we do not model


def fits_somewhere(pod_spec: Obj, nodes: Sequence[Obj]) -> tuple[bool, list[str]]:
    """Whether any node could ever run the pod, ignoring what currently runs there.

    Only hard constraints are judged: node selector, required node affinity, NoSchedule and
    NoExecute taints, and allocatable capacity for each requested resource. A ``True`` answer
    means "maybe"; ``False`` means no node, even empty, can take the pod.

    Returns:
        ``(fits, reasons)``: per node that cannot fit, why not.
    """
    selector = pod_spec.get("nodeSelector") or {}
    tolerations = pod_spec.get("tolerations") or []
    terms = (
        ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    requests: dict[str, float] = {}
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for key, value in merged.items():
            requests[key] = requests.get(key, 0.0) + parse_quantity(value)
    reasons: list[str] = []
    for node in nodes:
        name = _name(node)
        labels = (node.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            reasons.append(f"{name}: node selector does not match")
            continue
        if terms and not any(
            all(_matches_expression(labels, e) for e in (term.get("matchExpressions") or []))
            for term in terms
        ):
            reasons.append(f"{name}: required node affinity does not match")
            continue
        taints = [
            t
            for t in (node.get("spec") or {}).get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute")
        ]
        untolerated = [t for t in taints if not _tolerates(tolerations, t)]
        if untolerated:
            reasons.append(f"{name}: untolerated taint {untolerated[0].get('key')}")
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        short = [
            key
            for key, amount in requests.items()
            if amount > 0 and parse_quantity(allocatable.get(key, 0)) < amount
        ]
        if short:
            reasons.append(
                f"{name}: {short[0]} requested {requests[short[0]]:g}, "
                f"allocatable {parse_quantity(allocatable.get(short[0], 0)):g}"
            )
            continue
        return True, []
    return False, reasons
