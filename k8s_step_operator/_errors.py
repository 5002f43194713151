"""The one exception tree of the step operator.

Callers catch what they can act on: a bad setting before anything was sent, a refusal by the API
server, or a step that ran (or could not run) and did not succeed. None of these subclass the
client library's ``ApiException``; every API failure is translated in one place and chained with
``from``::

    StepOperatorError
    ├── ConfigurationError            bad input, raised before anything is submitted
    ├── ApiError                      the API server refused or failed a request
    │   ├── ForbiddenError            403: RBAC, Pod Security or an admission webhook
    │   ├── NotFoundError             404
    │   ├── ConflictError             409
    │   │   └── NameCollisionError    409 on a Job that belongs to another run or step
    │   ├── InvalidError              422: the server's field causes attached
    │   ├── TooManyRequestsError      429 (retried, honouring Retry-After)
    │   └── ServerUnavailableError    5xx, connection errors and read time-outs (retried)
    └── StepError                     the step did not succeed; carries job/pod/container facts
        ├── StepFailedError           the container exited non-zero
        │   └── OOMKilledError        killed for exceeding its memory limit
        ├── UnschedulableError        no node can take the pod (the scheduler's breakdown)
        ├── ImageError                the image cannot be pulled or is invalid
        ├── ContainerConfigError      a referenced Secret or ConfigMap is missing
        ├── DeadlineExceededError     the active deadline or a phase bound ran out
        ├── AdmissionRejectedError    quota, Pod Security or a webhook refused the pod
        ├── QueueError                Kueue cannot admit the step (no LocalQueue, no Kueue)
        ├── DeletedExternallyError    the Job disappeared before it finished
        └── StepCancelledError        the caller cancelled the step
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = [
    "AdmissionRejectedError",
    "ApiError",
    "ConfigurationError",
    "ConflictError",
    "ContainerConfigError",
    "DeadlineExceededError",
    "DeletedExternallyError",
    "FieldCause",
    "ForbiddenError",
    "ImageError",
    "InvalidError",
    "NameCollisionError",
    "NotFoundError",
    "OOMKilledError",
    "QueueError",
    "ServerUnavailableError",
    "StepCancelledError",
    "StepError",
    "StepFailedError",
    "StepOperatorError",
    "TooManyRequestsError",
    "UnschedulableError",
    "configuration_error",
    "unknown_key",
]


class StepOperatorError(Exception):
    """Root of every error this library raises on purpose."""


class ConfigurationError(StepOperatorError, ValueError):
    """A setting or input is invalid; raised before anything is sent to the cluster.

    Attributes:
        field: Dotted path of the offending field, e.g. ``settings.gpu.count``.
        accepted: What would have been accepted, in words.
        value: The rejected value (never a secret value).
    """

    def __init__(self, field: str, accepted: str, value: Any = None, *, detail: str = "") -> None:
        self.field = field
        self.accepted = accepted
        self.value = value
        self.detail = detail
        shown = "" if value is None else f" (got {value!r})"
        extra = f": {detail}" if detail else ""
        head = f"{field}: " if field else ""
        super().__init__(f"{head}expected {accepted}{shown}{extra}")


@dataclass(frozen=True)
class FieldCause:
    """One entry of a Status' ``details.causes``: which field the server rejected and why."""

    field: str
    reason: str
    message: str


class ApiError(StepOperatorError):
    """The API server answered with an error, or could not be reached.

    Attributes:
        status: HTTP status code, or 0 when no answer arrived.
        reason: The Status ``reason`` (``Forbidden``, ``Invalid``, ``AlreadyExists``...).
        message: The server's message.
        causes: Field-level causes from ``details.causes``.
        retry_after: Seconds the server asked to wait, when it said so.
        operation: What we were doing, e.g. ``create Job ns/name``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        causes: Sequence[FieldCause] = (),
        retry_after: float | None = None,
        operation: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = tuple(causes)
        self.retry_after = retry_after
        self.operation = operation
        self.body = dict(body) if body else {}
        head = f"{operation}: " if operation else ""
        code = f"{status} {reason}".strip() if status else (reason or "no answer")
        text = f"{head}{code}: {message}"
        if self.causes:
            text += "; " + "; ".join(f"{c.field}: {c.message}" for c in self.causes)
        super().__init__(text)


class ForbiddenError(ApiError):
    """403: the caller lacks an RBAC verb, or Pod Security / a webhook denied the object."""


class NotFoundError(ApiError):
    """404: the object (or the namespace) does not exist."""


class ConflictError(ApiError):
    """409: the object exists already, or was changed concurrently."""


class NameCollisionError(ConflictError):
    """A Job with the step's deterministic name exists but belongs to another run or step."""


class InvalidError(ApiError):
    """422: the server found the object invalid; ``causes`` names the fields."""


class TooManyRequestsError(ApiError):
    """429: the server is throttling; retried after ``retry_after``."""


class ServerUnavailableError(ApiError):
    """5xx, a refused or reset connection, or a read time-out; retried with back-off."""


class StepError(StepOperatorError):
    """The step did not succeed. Carries what Kubernetes said about it.

    Attributes:
        job: Job name.
        namespace: Job namespace.
        pod: The pod the facts come from, when there is one.
        rank: That pod's rank, when the step runs on several nodes (``None`` otherwise).
        container: The container, when there is one.
        reason: Kubernetes' reason (``BackoffLimitExceeded``, ``OOMKilled``, ``Unschedulable``...).
        exit_code: The container's exit code, when it ran.
        message: Kubernetes' message, or our summary of it.
        log_tail: The last lines the step printed, when there are any.
    """

    summary = "step failed"

    def __init__(
        self,
        message: str,
        *,
        job: str = "",
        namespace: str = "",
        pod: str = "",
        container: str = "",
        reason: str = "",
        exit_code: int | None = None,
        log_tail: Sequence[str] = (),
        rank: int | None = None,
    ) -> None:
        self.job = job
        self.namespace = namespace
        self.pod = pod
        self.rank = rank
        self.container = container
        self.reason = reason
        self.exit_code = exit_code
        self.message = message
        self.log_tail = list(log_tail)
        super().__init__(self._render())

    def _render(self) -> str:
        where = "/".join(p for p in (self.namespace, self.job) if p)
        parts = [f"{self.summary}: {where}" if where else self.summary]
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.pod:
            container = f" container {self.container}" if self.container else ""
            parts.append(f"pod {self.pod}{container}")
        if self.reason:
            parts.append(f"reason {self.reason}")
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        text = ", ".join(parts)
        if self.message:
            text += f": {self.message}"
        if self.log_tail:
            whose = f"rank {self.rank}'s" if self.rank is not None else "the step's"
            text += f"\n--- last lines of {whose} log ---\n" + "\n".join(self.log_tail)
        return text


class StepFailedError(StepError):
    """The step's container exited with a non-zero code."""

    summary = "step failed"


class OOMKilledError(StepFailedError):
    """The step's container was killed for exceeding its memory limit (exit code 137)."""

    summary = "step was OOM-killed (memory limit exceeded)"


class UnschedulableError(StepError):
    """No node can take the step's pod.

    Attributes:
        breakdown: The scheduler's explanation, e.g. ``0/6 nodes are available: 2 Insufficient
            nvidia.com/gpu, ...``.
    """

    summary = "step cannot be scheduled"

    def __init__(self, message: str, *, breakdown: str = "", **facts: Any) -> None:
        self.breakdown = breakdown
        super().__init__(message, **facts)


class ImageError(StepError):
    """The step's image is invalid, missing, or cannot be pulled."""

    summary = "step image cannot be used"


class ContainerConfigError(StepError):
    """The container cannot be created: a referenced Secret or ConfigMap is missing."""

    summary = "step container cannot be configured"


class DeadlineExceededError(StepError):
    """The step ran past its active deadline, or a phase ran past its bound."""

    summary = "step exceeded its deadline"


class AdmissionRejectedError(StepError):
    """The Job exists but its pod was refused: ResourceQuota, Pod Security or a webhook."""

    summary = "step pod was rejected at admission"


class QueueError(StepError):
    """The step's queue cannot admit it: its LocalQueue does not exist, or Kueue is absent."""

    summary = "step cannot be queued"


class DeletedExternallyError(StepError):
    """The Job was deleted by someone else before it finished."""

    summary = "step Job was deleted externally"


class StepCancelledError(StepError):
    """The caller cancelled the step; its Job and pods were deleted."""

    summary = "step was cancelled"


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def unknown_key(key: object, known: Iterable[str], what: str = "settings") -> str:
    """What to say of an unknown ``key``: the closest known one, then all the others.

    Args:
        key: The key that is not one.
        known: The keys that are.
        what: What the keys are, in the plural (``settings``, ``keys of a toleration``).

    Returns:
        The ``accepted`` text of a ``ConfigurationError``: ``one of the known settings: did
        you mean 'shm_size'? The others: a, b, c``.
    """
    names = sorted(set(known))
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6) if names else []
    if not close:
        return f"one of the known {what}: {', '.join(names)}"
    others = [n for n in names if n != close[0]]
    rest = f" The others: {', '.join(others)}" if others else ""
    return f"one of the known {what}: did you mean {close[0]!r}?{rest}"


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside a field's type (``list[Toleration] | None`` ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], path: Sequence[int | str]) -> type[BaseModel] | None:
    """The model that holds the last key of ``path`` (list indexes and mapping keys skipped)."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None:
            return None
        if isinstance(part, str) and part in current.model_fields:
            current = _inner_model(current.model_fields[part].annotation)
    return current


def configuration_error(
    exc: ValidationError,
    prefix: str = "settings",
    *,
    secret_fields: tuple[str, ...] = (),
    model: type[BaseModel] | None = None,
) -> ConfigurationError:
    """Translate a pydantic ``ValidationError`` into a ``ConfigurationError``.

    The first error decides the field; the others are listed in ``detail``. Values under
    ``secret_fields`` are never echoed. When a validator raised a ``ConfigurationError``, its
    field (relative to the validated field), accepted text and value are kept. An unknown key
    is answered with the closest known key of ``model`` (the one validated) and the others.
    """
    # A key that is not one is most often the misspelling of the one said to be missing: say it
    # first.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = _loc(tuple(first["loc"]))
    others = "; ".join(f"{_loc(tuple(e['loc']))}: {e['msg']}" for e in errors[1:])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigurationError):
        # A validator that raised ConfigurationError named the part below ``loc`` (``['KEY']``,
        # ``[0].name``...), what is accepted and a value safe to show.
        sub = cause.field
        path = loc + sub if not sub or not loc or sub.startswith("[") else f"{loc}.{sub}"
        return ConfigurationError(
            f"{prefix}.{path}" if path else prefix,
            cause.accepted,
            cause.value,
            detail="; ".join(p for p in (cause.detail, f"also {others}" if others else "") if p),
        )
    field = f"{prefix}.{loc}" if loc else prefix
    value: Any = first.get("input")
    if (
        not loc
        or isinstance(value, Mapping)
        or any(loc.split(".")[0].split("[")[0] == s for s in secret_fields)
    ):
        value = None
    accepted = str(first["msg"])
    for lead, replacement in (
        ("Value error, ", ""),
        ("Input should be ", ""),
        ("String should match pattern ", "a string matching "),
        ("String should have ", "a string with "),
    ):
        if accepted.startswith(lead):
            accepted = replacement + accepted[len(lead) :]
    if first["type"] == "missing":
        accepted = "a value (the field is required)"
    if first["type"] == "extra_forbidden":
        value = None
        where = tuple(first["loc"])
        holder = _model_at(model, where[:-1]) if model is not None and where else None
        if holder is not None:
            what = getattr(holder, "error_keys", "") or f"keys of a {holder.__name__}"
            accepted = unknown_key(where[-1], holder.model_fields, what)
        elif isinstance(exc, ConfigurationError):
            # Described already, with the model, when it was raised.
            accepted = exc.accepted
        else:
            accepted = "one of the known settings (this key is not one)"
    return ConfigurationError(field, accepted, value, detail=f"also {others}" if others else "")
