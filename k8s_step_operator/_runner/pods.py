"""Reading an object's status: the one loop over conditions and over a pod's containers.

Everything else reads status through these. They read a ``Job``, ``Pod`` or ``Workload`` of
``k8s_step_operator._objects``; their parameters stay plain mappings (cast once, on entry) while
the watcher and the diagnosis hold untyped dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from k8s_step_operator._objects import (
    Condition,
    ContainerState,
    ContainerStatus,
    Job,
    Pod,
    Workload,
    conditions_of,
)

__all__ = ["conditions_by_type", "container_state", "container_statuses", "pod_finished"]


def conditions_by_type(obj: Mapping[str, Any]) -> dict[str, Condition]:
    """A ``Job``'s, ``Pod``'s or ``Workload``'s ``status.conditions`` by their ``type``."""
    conditions = conditions_of(cast("Job | Pod | Workload", obj))
    return {str(c.get("type")): c for c in conditions if isinstance(c, Mapping)}


def container_statuses(pod: Mapping[str, Any]) -> list[ContainerStatus]:
    """A ``Pod``'s init containers' statuses, then its containers', in the pod's order."""
    status = cast(Pod, pod).get("status", {})
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def container_state(pod: Mapping[str, Any], container: str) -> ContainerState | None:
    """The ``state`` of one container of a ``Pod`` (``None`` when it has no status yet)."""
    for cs in container_statuses(pod):
        if cs.get("name") == container:
            return cs.get("state", {})
    return None


def pod_finished(pod: Mapping[str, Any]) -> bool:
    """Whether a ``Pod`` reached Succeeded or Failed."""
    return cast(Pod, pod).get("status", {}).get("phase") in ("Succeeded", "Failed")
