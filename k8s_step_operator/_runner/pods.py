"""Reading an object's status: the one loop over conditions and over a pod's containers.

Everything else reads status through these. They read a ``Job``, ``Pod`` or ``Workload`` of
``k8s_step_operator._objects``.
"""

from __future__ import annotations

from collections.abc import Mapping

from k8s_step_operator._job.keys import JOB_COMPLETION_INDEX_ANNOTATION
from k8s_step_operator._objects import (
    ClusterQueue,
    Condition,
    ContainerState,
    ContainerStatus,
    Job,
    LocalQueue,
    Pod,
    Workload,
    conditions_of,
)

__all__ = [
    "conditions_by_type",
    "container_state",
    "container_statuses",
    "pod_finished",
    "rank_of",
]


def conditions_by_type(
    obj: Job | Pod | Workload | LocalQueue | ClusterQueue,
) -> dict[str, Condition]:
    """A ``Job``'s, ``Pod``'s, ``Workload``'s or queue's ``status.conditions`` by ``type``."""
    conditions = conditions_of(obj)
    return {str(c.get("type")): c for c in conditions if isinstance(c, Mapping)}


def container_statuses(pod: Pod) -> list[ContainerStatus]:
    """A ``Pod``'s init containers' statuses, then its containers', in the pod's order."""
    status = pod.get("status", {})
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def container_state(pod: Pod, container: str) -> ContainerState | None:
    """The ``state`` of one container of a ``Pod`` (``None`` when it has no status yet)."""
    for cs in container_statuses(pod):
        if cs.get("name") == container:
            return cs.get("state", {})
    return None


def pod_finished(pod: Pod) -> bool:
    """Whether a ``Pod`` reached Succeeded or Failed."""
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def rank_of(pod: Pod) -> int:
    """A pod's rank: its completion index (0 for a pod of a Job that is not Indexed)."""
    value = pod.get("metadata", {}).get("annotations", {}).get(JOB_COMPLETION_INDEX_ANNOTATION)
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0
