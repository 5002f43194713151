"""What the runner needs from the outside world: a few API calls and a clock.

The runner and the watcher never build API objects nor read the time themselves. They receive a
``KubeAccess`` (implemented over the official client in ``k8s_step_operator._kube``; in unit tests
by an in-memory fake) and a ``Clock`` (the system's, or a fake one that advances without
sleeping). Every method of ``KubeAccess`` raises only errors of the ``ApiError`` family, already
translated and retried where a retry may help; objects travel as plain JSON dicts, typed by the
shapes of ``k8s_step_operator._objects``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias, overload

from k8s_step_operator._objects import (
    ClusterQueue,
    ConfigMap,
    Event,
    Job,
    KubeObject,
    LocalQueue,
    Node,
    NodePool,
    ObjectList,
    PendingWorkload,
    Pod,
    Workload,
)

__all__ = [
    "SYSTEM_CLOCK",
    "AnyList",
    "Clock",
    "Kind",
    "KubeAccess",
    "Stream",
    "SystemClock",
]

# The namespaced kinds the watcher lists and watches.
Kind = Literal["jobs", "pods", "events", "workloads"]

AnyList: TypeAlias = ObjectList[Job] | ObjectList[Pod] | ObjectList[Event] | ObjectList[Workload]
"""The list of a kind known only as a ``Kind``: one of the four."""


class Stream(Protocol):
    """An open streaming response: an iterator of text lines that another thread may close."""

    def __iter__(self) -> Iterator[str]:
        """The lines, as they arrive; ends when the server ends the response."""
        ...

    def close(self) -> None:
        """End the stream now, waking a thread blocked reading it."""
        ...


class KubeAccess(Protocol):
    """The calls a step's runner makes, nothing more."""

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> Job:
        """Create a Job; a 409 raises ``ConflictError`` (the caller resolves it)."""
        ...

    def get_job(self, namespace: str, name: str) -> Job:
        """Read a Job; a missing one raises ``NotFoundError``."""
        ...

    def delete_job(
        self, namespace: str, name: str, *, uid: str | None, budget: float | None = None
    ) -> None:
        """Delete a Job with background propagation, only if its uid is ``uid`` (when given).

        ``budget`` bounds the seconds spent retrying (``None``: the default budget).
        """
        ...

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> KubeObject:
        """Create a Secret; a 409 raises ``ConflictError``."""
        ...

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> KubeObject:
        """Create a Service; a 409 raises ``ConflictError``."""
        ...

    @overload
    def list_objects(
        self,
        kind: Literal["jobs"],
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList[Job]: ...
    @overload
    def list_objects(
        self,
        kind: Literal["pods"],
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList[Pod]: ...
    @overload
    def list_objects(
        self,
        kind: Literal["events"],
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList[Event]: ...
    @overload
    def list_objects(
        self,
        kind: Literal["workloads"],
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList[Workload]: ...
    @overload
    def list_objects(
        self,
        kind: Kind,
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> AnyList: ...
    def list_objects(
        self,
        kind: Kind,
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> AnyList:
        """List a kind: the list object, with ``items`` and ``metadata.resourceVersion``.

        The items are of the kind listed: ``Job``, ``Pod``, ``Event`` or ``Workload``. With
        ``limit``, one page of at most that many items; ``metadata.continue`` is then the
        ``continue_token`` of the next page (none after the last).
        """
        ...

    def list_events(self, namespace: str, field_selector: str) -> list[Event]:
        """The events a field selector selects (``involvedObject.name=pod-x``...).

        Events carry no labels: this is how a step reads its own without reading everyone's.
        """
        ...

    def watch(
        self,
        kind: Kind,
        namespace: str,
        label_selector: str | None,
        resource_version: str,
        *,
        timeout_seconds: int,
        read_timeout: float,
    ) -> Stream:
        """Open a watch from ``resource_version`` with bookmarks; one JSON event per line.

        A version too old for the server raises ``ApiError`` with status 410 (or arrives as an
        ``ERROR`` event with code 410).
        """
        ...

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool,
        since_seconds: int | None = None,
        tail_lines: int | None = None,
        timestamps: bool = True,
        read_timeout: float = 30.0,
    ) -> Stream:
        """Open a container's log; a container not started yet raises ``ApiError`` 400."""
        ...

    def list_nodes(self) -> list[Node]:
        """Every node; without the permission raises ``ForbiddenError``."""
        ...

    def list_nodepools(self) -> list[NodePool]:
        """Karpenter's NodePools; ``NotFoundError`` when Karpenter's API is not served."""
        ...

    def get_configmap(self, namespace: str, name: str) -> ConfigMap:
        """Read a ConfigMap; a missing one raises ``NotFoundError``."""
        ...

    def get_local_queue(self, namespace: str, name: str) -> LocalQueue:
        """Read a Kueue LocalQueue; a missing one raises ``NotFoundError``."""
        ...

    def get_cluster_queue(self, name: str) -> ClusterQueue:
        """Read a Kueue ClusterQueue; a missing one raises ``NotFoundError``."""
        ...

    def pending_workloads(self, namespace: str, local_queue: str) -> list[PendingWorkload]:
        """Kueue's visibility API: a LocalQueue's pending Workloads, with their positions."""
        ...


class Clock(Protocol):
    """Time as the runner sees it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds pass; whether it was set."""
        ...

    def now(self) -> datetime:
        """The wall-clock time (UTC), for comparisons with server timestamps."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """``event.wait(timeout)``."""
        return event.wait(timeout)

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)


SYSTEM_CLOCK: Clock = SystemClock()
