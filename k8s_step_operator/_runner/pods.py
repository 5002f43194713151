"""Reading a pod's status: the one loop over its containers that everything else uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["container_state", "container_statuses", "pod_finished"]

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
