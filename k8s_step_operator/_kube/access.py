"""The runner's API calls over the official client: raw JSON in and out, errors translated.

Responses are read with ``_preload_content=False`` and decoded as plain JSON: the client's model
deserialization costs milliseconds per object, which hundreds of concurrent steps cannot afford.
The decoded JSON is returned as the shape the server answers with (``k8s_step_operator._objects``).
Every call goes through ``call`` (one retry policy, one error translation).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from k8s_step_operator._errors import ApiError
from k8s_step_operator._kube.client import (
    RETRY_BUDGET_SECONDS,
    RetryListener,
    abort,
    api_error,
    call,
    read_json,
)
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
)

# Retrying before the server was ever reached: long enough for a blip, short for a wrong address.
STARTUP_BUDGET_SECONDS = 10.0
# (connect, read) seconds of one request: a server that drops packets fails it, and it is retried.
_TIMEOUT = (10, 30)
# Requests (streams apart) one client has in flight at once, each on one of as many worker
# threads; the others wait their turn. A burst of thousands of steps would otherwise open a
# connection each (a TLS handshake, then discarded past the pool's size) and draw 429s from the
# API server (400 requests in flight by default, for every client together).
MAX_IN_FLIGHT = 16

__all__ = ["KubeApi", "ResponseStream"]

# Kueue's Workload; only read, to say why a queued step waits.
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
KUEUE_VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
# Karpenter's NodePools; only read, to know whether a node may be added for a pending pod.
KARPENTER_GROUP = "karpenter.sh"
KARPENTER_VERSION = "v1"


class ResponseStream:
    """A streaming HTTP response as lines; ``close`` from another thread ends the iteration."""

    def __init__(self, response: Any, operation: str) -> None:
        self._response = response
        self._operation = operation
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        try:
            yield from iter_resp_lines(self._response)
        except Exception as e:
            if self._closed.is_set():
                return
            raise api_error(e, self._operation) from e
        finally:
            with contextlib.suppress(Exception):
                self._response.release_conn()

    def close(self) -> None:
        """Shut the connection down now, waking a reader."""
        self._closed.set()
        abort(self._response)


def _read_whole(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    resp = fn(*args, **kwargs)
    if kwargs.get("_preload_content") is False:
        _ = resp.data  # read now, on the worker; later reads return it
    return resp


class KubeApi:
    """``KubeAccess`` over one ``kubernetes.client.ApiClient``.

    Until one call has reached the server, failures are retried for ``startup_budget`` only: a
    server that cannot be reached at the start (a wrong address, a cluster that is down) is
    reported within seconds, while one that goes away mid-step is waited for.

    Args:
        api_client: The client; ``close`` closes it.
        budget: Seconds of retrying a failing call before its error is raised.
        startup_budget: The same, before any call has succeeded.
        max_in_flight: Requests (streams apart) in flight at once, each made by one of as
            many worker threads; more wait for a turn.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        budget: float = RETRY_BUDGET_SECONDS,
        startup_budget: float = STARTUP_BUDGET_SECONDS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.api_client = api_client
        self._max_in_flight = max_in_flight
        self._workers_lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None
        self._budget = budget
        self._startup_budget = startup_budget
        self._reached = False
        self._batch = k8s.BatchV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        # Told of every retried call (the operator publishes them as events).
        self.on_retry: RetryListener | None = None

    @property
    def budget(self) -> float:
        """The retry budget of the next call."""
        return self._budget if self._reached else min(self._budget, self._startup_budget)

    def _call(self, operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("budget", self.budget)
        kwargs.setdefault("on_retry", self.on_retry)
        try:
            result = call(operation, self._in_turn(fn), *args, **kwargs)
        except ApiError as e:
            self._reached = self._reached or e.status != 0  # an answer, even a refusal
            raise
        self._reached = True
        return result

    def _in_turn(self, fn: Any) -> Any:
        """``fn``, called by one of the client's workers while the caller waits for its answer.

        The answer is read whole by the worker: the connection returns to the pool, and a read
        cut short is retried with the call. The HTTP client and TLS run on these few threads, not
        on every caller's: thousands of steps waiting in as many threads keep small stacks.
        """

        def in_turn(*args: Any, **kwargs: Any) -> Any:
            try:
                answer = self._executor().submit(_read_whole, fn, args, kwargs)
            except RuntimeError:
                # The workers are stopped (``close`` from another thread, or the interpreter is
                # exiting under a daemon thread still following a step): call from here.
                return _read_whole(fn, args, kwargs)
            return answer.result()

        return in_turn

    def _executor(self) -> ThreadPoolExecutor:
        with self._workers_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    self._max_in_flight, thread_name_prefix="kube-api"
                )
            return self._workers

    def close(self) -> None:
        """Close the client's connection pool and stop its workers."""
        with self._workers_lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            workers.shutdown(wait=False)
        self.api_client.close()

    # -- Jobs and Secrets ------------------------------------------------------------------

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> Job:
        """Create a Job."""
        name = (job.get("metadata") or {}).get("name", "")
        resp = self._call(
            f"create Job {namespace}/{name}",
            self._batch.create_namespaced_job,
            namespace,
            dict(job),
            _preload_content=False,
            _request_timeout=_TIMEOUT,
        )
        created: Job = read_json(resp)
        return created

    def get_job(self, namespace: str, name: str) -> Job:
        """Read a Job."""
        resp = self._call(
            f"get Job {namespace}/{name}",
            self._batch.read_namespaced_job,
            name,
            namespace,
            _preload_content=False,
            _request_timeout=_TIMEOUT,
        )
        job: Job = read_json(resp)
        return job

    def delete_job(
        self, namespace: str, name: str, *, uid: str | None, budget: float | None = None
    ) -> None:
        """Delete a Job (background propagation), only if it still has ``uid``."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._call(
            f"delete Job {namespace}/{name}",
            self._batch.delete_namespaced_job,
            name,
            namespace,
            body=body,
            _preload_content=False,
            _request_timeout=_TIMEOUT,
            budget=self.budget if budget is None else budget,
        ).release_conn()

    def create_secret(self, namespace: str, secret: Mapping[str, Any]) -> KubeObject:
        """Create a Secret."""
        name = (secret.get("metadata") or {}).get("name", "")
        resp = self._call(
            f"create Secret {namespace}/{name}",
            self._core.create_namespaced_secret,
            namespace,
            dict(secret),
            _preload_content=False,
            _request_timeout=_TIMEOUT,
        )
        created: KubeObject = read_json(resp)
        return created

    def create_service(self, namespace: str, service: Mapping[str, Any]) -> KubeObject:
        """Create a Service."""
        name = (service.get("metadata") or {}).get("name", "")
        resp = self._call(
            f"create Service {namespace}/{name}",
            self._core.create_namespaced_service,
            namespace,
            dict(service),
            _preload_content=False,
            _request_timeout=_TIMEOUT,
        )
        created: KubeObject = read_json(resp)
        return created

    # -- lists and watches -----------------------------------------------------------------

    def _list_fn(self, kind: str) -> Any:
        if kind == "jobs":
            return self._batch.list_namespaced_job
        if kind == "pods":
            return self._core.list_namespaced_pod
        if kind == "events":
            return self._core.list_namespaced_event
        if kind == "workloads":

            def workloads(namespace: str, **kwargs: Any) -> Any:
                return self._custom.list_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads", **kwargs
                )

            return workloads
        raise ValueError(f"unknown kind {kind!r}")

    def list_objects(
        self,
        kind: str,
        namespace: str,
        label_selector: str | None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ObjectList[Any]:
        """List one kind in a namespace (``items`` of that kind), or one page of it."""
        kwargs: dict[str, Any] = {"_preload_content": False, "_request_timeout": (10, 60)}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if limit:
            kwargs["limit"] = limit
        if continue_token:
            kwargs["_continue"] = continue_token
        resp = self._call(
            f"list {kind} in {namespace}",
            self._list_fn(kind),
            namespace,
            **kwargs,
        )
        listed: ObjectList[Any] = read_json(resp)
        return listed

    def list_events(self, namespace: str, field_selector: str) -> list[Event]:
        """The events a field selector selects (a short read, retried briefly)."""
        listed: ObjectList[Event] = self._read(
            f"list events ({field_selector}) in {namespace}",
            self._core.list_namespaced_event,
            namespace,
            field_selector=field_selector,
        )
        return list(listed.get("items") or [])

    def watch(
        self,
        kind: str,
        namespace: str,
        label_selector: str | None,
        resource_version: str,
        *,
        timeout_seconds: int,
        read_timeout: float,
    ) -> ResponseStream:
        """Open a watch; retries are the watcher's business, so none here."""
        operation = f"watch {kind} in {namespace}"
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
            "_preload_content": False,
            "_request_timeout": (10, read_timeout),
        }
        if label_selector:
            kwargs["label_selector"] = label_selector
        try:
            resp = self._list_fn(kind)(namespace, **kwargs)
        except ApiException as e:
            raise api_error(e, operation) from e
        except Exception as e:
            raise api_error(e, operation) from e
        return ResponseStream(resp, operation)

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
    ) -> ResponseStream:
        """Open a container's log (no retries: the follower decides)."""
        operation = f"logs of pod {namespace}/{pod}"
        kwargs: dict[str, Any] = {
            "container": container or None,
            "follow": follow,
            "timestamps": timestamps,
            "_preload_content": False,
            "_request_timeout": (10, read_timeout),
        }
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            resp = self._core.read_namespaced_pod_log(pod, namespace, **kwargs)
        except Exception as e:
            raise api_error(e, operation) from e
        return ResponseStream(resp, operation)

    def _read(self, operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One short read of JSON: (10 s, 30 s) time-outs, retried for at most 10 s."""
        kwargs.setdefault("budget", min(self.budget, 10.0))
        resp = self._call(
            operation, fn, *args, _preload_content=False, _request_timeout=(10, 30), **kwargs
        )
        return read_json(resp)

    def list_nodes(self) -> list[Node]:
        """Every node (for the fit check)."""
        nodes: ObjectList[Node] = self._read("list nodes", self._core.list_node)
        return list(nodes.get("items") or [])

    def list_nodepools(self) -> list[NodePool]:
        """Karpenter's NodePools (cluster-scoped)."""
        pools: ObjectList[NodePool] = self._read(
            "list nodepools.karpenter.sh",
            self._custom.list_cluster_custom_object,
            KARPENTER_GROUP,
            KARPENTER_VERSION,
            "nodepools",
        )
        return list(pools.get("items") or [])

    def get_configmap(self, namespace: str, name: str) -> ConfigMap:
        """Read a ConfigMap."""
        configmap: ConfigMap = self._read(
            f"get ConfigMap {namespace}/{name}",
            self._core.read_namespaced_config_map,
            name,
            namespace,
        )
        return configmap

    def get_local_queue(self, namespace: str, name: str) -> LocalQueue:
        """Read a Kueue LocalQueue."""
        queue: LocalQueue = self._read(
            f"get LocalQueue {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            KUEUE_GROUP,
            KUEUE_VERSION,
            namespace,
            "localqueues",
            name,
        )
        return queue

    def get_cluster_queue(self, name: str) -> ClusterQueue:
        """Read a Kueue ClusterQueue (cluster-scoped)."""
        queue: ClusterQueue = self._read(
            f"get ClusterQueue {name}",
            self._custom.get_cluster_custom_object,
            KUEUE_GROUP,
            KUEUE_VERSION,
            "clusterqueues",
            name,
        )
        return queue

    def pending_workloads(self, namespace: str, local_queue: str) -> list[PendingWorkload]:
        """A LocalQueue's pending Workloads from Kueue's visibility API (where it is served)."""
        pending: ObjectList[PendingWorkload] = self._read(
            f"get pending workloads of LocalQueue {namespace}/{local_queue}",
            self._custom.get_namespaced_custom_object,
            KUEUE_VISIBILITY_GROUP,
            KUEUE_VERSION,
            namespace,
            "localqueues",
            f"{local_queue}/pendingworkloads",
            retry=False,
        )
        return list(pending.get("items") or [])
