"""What a failed image pull says: its cause, the kubelet's attempts, and whether a retry can help.

The kubelet says the same failure in several wordings (the container's waiting message, its
back-off's, its ``Failed`` events, each wrapped by the runtime's gRPC error), and a step must
report one cause, once, and tell a pull that will never succeed (a missing tag, a host that does
not exist) from one that may (a rate limit, a time-out) without waiting out every back-off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from k8s_step_operator._objects import Event, Pod
from k8s_step_operator._runner.pods import container_statuses

__all__ = ["container_image", "pull_cause", "pull_will_not_improve"]

# What a failed pull says, read as "will not get better" or "may get better". A retry cannot
# bring a registry host into existence, open a port nobody listens on, or push a missing tag; a
# rate limit, a time-out or a server error may pass. Checked in this order: a time-out on the way
# to a host that does not answer is the second kind.
_PULL_MAY_IMPROVE = (
    "toomanyrequests",
    "too many requests",
    "rate limit",
    "timeout",
    "timed out",
    "deadline exceeded",
    "connection reset",
    "500 internal",
    "service unavailable",
    "bad gateway",
    "unexpected eof",
)
# The HTTP statuses of the second kind, as whole numbers: not digits of a digest or a port.
_PULL_MAY_IMPROVE_STATUS = re.compile(r"\b(429|502|503|504)\b")
_PULL_WILL_NOT_IMPROVE = (
    "no such host",
    "connection refused",
    "manifest unknown",
    "not found",
    "name unknown",
    "repository does not exist",
    "pull access denied",
    "unauthorized",
    "authentication required",
    "denied",
    "server gave http response to https client",
    "x509",
)
_BACKOFF_PREFIX = re.compile(r'^Back-off pulling image "[^"]*"(: )?(ErrImagePull: )?')
_FAILED_PULL = re.compile(r'^Failed to pull image "[^"]*": ')
# The runtime's gRPC wrapping, the same on the container's status and on the kubelet's event.
_RPC_PREFIX = re.compile(r"^rpc error: code = \w+ desc = ")


def pull_will_not_improve(cause: str) -> bool:
    """Whether a failed pull's words say that retrying cannot help."""
    text = cause.lower()
    if any(words in text for words in _PULL_MAY_IMPROVE) or _PULL_MAY_IMPROVE_STATUS.search(text):
        return False
    return any(words in text for words in _PULL_WILL_NOT_IMPROVE)


def pull_cause(
    pod_name: str, reason: str, message: str, events: Sequence[Event]
) -> tuple[str, int]:
    """The cause of a pod's failing pull, without the wrappings, and the attempts events count.

    Args:
        pod_name: The pod whose pull fails.
        reason: The container's waiting reason (``ErrImagePull``, ``ImagePullBackOff``...): the
            cause when nothing says more.
        message: The container's waiting message.
        events: Events read about the pod (others are skipped).
    """
    cause = _RPC_PREFIX.sub("", _BACKOFF_PREFIX.sub("", message).strip())
    attempts = 0
    for e in events:
        text = str(e.get("message") or "")
        if e.get("involvedObject", {}).get("name") != pod_name or not _FAILED_PULL.match(text):
            continue
        attempts = max(attempts, int(e.get("series", {}).get("count") or e.get("count") or 1))
        if not cause:
            # The back-off's own message may carry no cause: the kubelet's last event does.
            cause = _RPC_PREFIX.sub("", _FAILED_PULL.sub("", text))
    return cause or reason, attempts


def container_image(pod: Pod, container: str) -> str:
    """The image of a pod's container; ``""`` when neither its spec nor its status names one.

    The container's status names its image too (a cached pod keeps no containers in its spec).
    """
    for c in [*(pod.get("spec", {}).get("containers") or []), *container_statuses(pod)]:
        if c.get("name") == container and c.get("image"):
            return str(c.get("image"))
    return ""
