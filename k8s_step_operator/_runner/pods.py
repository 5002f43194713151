"""Reading an object's status: the one loop over conditions and over a pod's containers.

Everything else reads status through these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["conditions_by_type", "container_state", "container_statuses", "pod_finished"]


def conditions_by_type(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """An object's ``status.conditions`` by their ``type`` (Job, pod, Kueue Workload)."""
    return {
        str(c.get("type")): c
        for c in ((obj.get("status") or {}).get("conditions") or [])
        if isinstance(c, Mapping)
    }


Obj = Mapping[str, Any]


def container_statuses(pod: Obj) -> list[Mapping[str, Any]]:
    """The statuses of the init containers, then of the containers, in the pod's order."""
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def container_state(pod: Obj, container: str) -> Mapping[str, Any] | None:
    """The ``state`` of one container of the pod (``None`` when it has no status yet)."""
    for cs in container_statuses(pod):
        if cs.get("name") == container:
            state: Mapping[str, Any] = cs.get("state") or {}
            return state
    return None


def pod_finished(pod: Obj) -> bool:
    """Whether the pod reached Succeeded or Failed."""
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
