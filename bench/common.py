"""What the benchmark scripts of bench/ share, so that each figure is taken the same way in all.

The scripts run as files (``python bench/run.py``), so this module is imported from their
directory as ``common``. ``zenml_bench.py`` and ``zenml_server_bench.py`` run under ZenML's
environment, the others under the project's: this module imports only what both have (the
standard library, ``kubernetes`` and ``k8s_step_operator``). A script puts the checkout's root
first on ``sys.path`` before importing it, so that the checkout's ``k8s_step_operator`` is the
one used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import urllib3  # the kubernetes client's own HTTP library, in both environments
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from k8s_step_operator import KubernetesJobStepOperatorConfig, StepConfiguration, StepRunInfo
from k8s_step_operator._kube.client import abort

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_KEY = "step_operator.kubernetes_job"
# The image every bench operator's steps name.
IMAGE = "localhost/bench:1"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
# The conditions that end a Job, as the Job controller sets them (a membership test: no order).
TERMINAL = ("SuccessCriteriaMet", "Complete", "FailureTarget", "Failed")


# -- the cluster, the bench's operators and steps, its nodes and namespaces ------------------------


def kubeconfig() -> str:
    """The cluster's kubeconfig: ``$KUBECONFIG``, else the local cluster's."""
    return os.environ.get("KUBECONFIG") or str(ROOT / ".cluster" / "kubeconfig")


def operator_config(namespace: str, **settings: Any) -> KubernetesJobStepOperatorConfig:
    """The configuration of a bench operator: this cluster, ``namespace``, the bench image.

    Args:
        namespace: Where the operator's Jobs go.
        **settings: Any other field of the configuration.
    """
    return KubernetesJobStepOperatorConfig(
        kubeconfig_path=kubeconfig(),
        namespace=namespace,
        image=IMAGE,
        image_pull_policy="IfNotPresent",
        **settings,
    )


def step_info(run: str, step: str, duration: str) -> StepRunInfo:
    """A step of ``run`` that runs ``duration`` (e.g. ``"5s"``) on the simulated nodes."""
    return StepRunInfo(
        step_run_id=str(uuid.uuid4()),
        run_id=run,
        run_name=run,
        pipeline_step_name=step,
        config=StepConfiguration(
            name=step,
            settings={
                SETTINGS_KEY: {
                    "pod_annotations": {"sim.k8s-step-operator.io/run-duration": duration}
                }
            },
        ),
    )


def add_simulated_nodes(nodes_file: str, *, quiet: bool = False) -> None:
    """Add the simulated nodes of ``bench/<nodes_file>`` to the cluster (``e2e/cluster.py``).

    Args:
        nodes_file: The nodes' file, in bench/.
        quiet: Whether to leave out what the command prints on stdout.
    """
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "e2e" / "cluster.py"),
            "add-nodes",
            str(ROOT / "bench" / nodes_file),
        ],
        check=True,
        stdout=subprocess.DEVNULL if quiet else None,
    )


def new_namespace(
    admin: k8s.ApiClient, prefix: str, labels: Mapping[str, str] | None = None
) -> str:
    """A new namespace ``<prefix>-<6 hex digits>``, once its ``default`` service account exists.

    Pods cannot be created in a namespace before its service account controller has made that
    account; after 30 s the namespace is returned anyway.

    Args:
        admin: An API client allowed to create namespaces.
        prefix: The name's beginning.
        labels: The namespace's labels, if any.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(admin)
    metadata: dict[str, object] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    core.create_namespace({"metadata": metadata})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ):
            break
        time.sleep(0.2)
    return name


@contextlib.contextmanager
def temporary_namespace(
    admin: k8s.ApiClient, prefix: str, labels: Mapping[str, str] | None = None
) -> Iterator[str]:
    """``new_namespace``, deleted on leaving (in the background: not waited for)."""
    name = new_namespace(admin, prefix, labels)
    try:
        yield name
    finally:
        k8s.CoreV1Api(admin).delete_namespace(name, propagation_policy="Background")


# -- calls at once, and the figures' summary -------------------------------------------------------


def run_parallel(
    fn: Callable[[int], None],
    count: int,
    width: int | None = None,
    *,
    daemon: bool | None = None,
) -> list[BaseException]:
    """Call ``fn(0)`` to ``fn(count - 1)``, each in a thread of its own, and wait for them all.

    Args:
        fn: What each thread does, given its index.
        count: How many threads.
        width: How many may call ``fn`` at once (None: all of them).
        daemon: Whether the threads are daemon threads (None: as the calling thread is).

    Returns:
        What the calls raised, in the order they raised it.
    """
    errors: list[BaseException] = []
    limit: contextlib.AbstractContextManager[Any] = (
        contextlib.nullcontext() if width is None else threading.Semaphore(width)
    )

    def one(i: int) -> None:
        with limit:
            try:
                fn(i)
            except BaseException as e:  # returned to the caller
                errors.append(e)

    threads = [threading.Thread(target=one, args=(i,), daemon=daemon) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def summary(values: Sequence[float], *, digits: int = 3, p99: bool = True) -> dict[str, float]:
    """A distribution's ``n``, ``min``, ``p50``, ``p99`` and ``max``, rounded; ``{}`` for none.

    Args:
        values: The figures, in any order.
        digits: The decimal places each figure is rounded to.
        p99: Whether to include ``p99`` (the value at rank ``round(0.99 * (n - 1))``).
    """
    if not values:
        return {}
    ordered = sorted(values)
    figures: dict[str, float] = {
        "n": len(ordered),
        "min": round(ordered[0], digits),
        "p50": round(statistics.median(ordered), digits),
    }
    if p99:
        last = len(ordered) - 1
        figures["p99"] = round(ordered[min(last, round(0.99 * last))], digits)
    figures["max"] = round(ordered[-1], digits)
    return figures


# -- Kueue -----------------------------------------------------------------------------------------


def kueue_installed(admin: k8s.ApiClient) -> bool:
    """Whether the cluster serves Kueue's API (``KUEUE``)."""
    try:
        k8s.CustomObjectsApi(admin).get_api_resources(*KUEUE)
    except ApiException:
        return False
    return True


def create_kueue_queue(
    admin: k8s.ApiClient,
    namespace: str,
    *,
    flavor: str,
    cluster_queue: str,
    gpus: int,
    node_labels: Mapping[str, str],
    tolerations: list[dict[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """A Kueue queue of ``gpus`` GPUs for ``namespace`` alone: its LocalQueue ``gpu``.

    Args:
        admin: An API client allowed to create Kueue's objects.
        namespace: The only namespace the ClusterQueue admits from.
        flavor: The ResourceFlavor's name.
        cluster_queue: The ClusterQueue's name.
        gpus: The ClusterQueue's quota of ``nvidia.com/gpu``, all of the flavor.
        node_labels: The labels of the flavor's nodes.
        tolerations: What the flavor adds to the admitted pods, if anything.

    Returns:
        The cluster-scoped objects made, as (plural, name), for ``delete_cluster_objects``.
    """
    custom = k8s.CustomObjectsApi(admin)
    group, version = KUEUE
    api_version = f"{group}/{version}"
    flavor_spec: dict[str, Any] = {"nodeLabels": dict(node_labels)}
    if tolerations is not None:
        flavor_spec["tolerations"] = tolerations
    custom.create_cluster_custom_object(
        group,
        version,
        "resourceflavors",
        {
            "apiVersion": api_version,
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor},
            "spec": flavor_spec,
        },
    )
    custom.create_cluster_custom_object(
        group,
        version,
        "clusterqueues",
        {
            "apiVersion": api_version,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        "coveredResources": ["nvidia.com/gpu"],
                        "flavors": [
                            {
                                "name": flavor,
                                "resources": [{"name": "nvidia.com/gpu", "nominalQuota": gpus}],
                            }
                        ],
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        group,
        version,
        namespace,
        "localqueues",
        {
            "apiVersion": api_version,
            "kind": "LocalQueue",
            "metadata": {"name": "gpu"},
            "spec": {"clusterQueue": cluster_queue},
        },
    )
    return [("clusterqueues", cluster_queue), ("resourceflavors", flavor)]


def delete_cluster_objects(admin: k8s.ApiClient, objects: list[tuple[str, str]]) -> None:
    """Delete Kueue's cluster-scoped ``objects`` (plural, name) in order; failures are logged."""
    custom = k8s.CustomObjectsApi(admin)
    for kind, name in objects:
        try:
            custom.delete_cluster_custom_object(*KUEUE, kind, name)
        except ApiException as e:
            logging.warning("could not delete %s %s: %s", kind, name, e)


# -- the API server's own counters -----------------------------------------------------------------

# One pool of connections per API client (by ``id``), for the callers that keep theirs.
_POOLS: dict[int, urllib3.PoolManager] = {}


def metrics_text(api: k8s.ApiClient, *, reuse_pool: bool = True) -> str:
    """The API server's ``/metrics``, read with ``api``'s address and credentials.

    Args:
        api: The API client whose configuration is used.
        reuse_pool: Whether to keep the connection pool for ``api``'s next call (else each call
            makes a pool, and a connection, of its own).
    """
    cfg = api.configuration
    pool = _POOLS.get(id(api)) if reuse_pool else None
    if pool is None:
        pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
        )
        if reuse_pool:
            _POOLS[id(api)] = pool
    headers = {}
    if cfg.api_key.get("authorization"):
        headers["Authorization"] = cfg.api_key["authorization"]
    r = pool.request("GET", cfg.host + "/metrics", headers=headers, timeout=30)
    return str(r.data.decode())


def _labels(line: str) -> dict[str, str]:
    inside = line[line.index("{") + 1 : line.rindex("}")]
    out: dict[str, str] = {}
    for part in inside.split('",'):
        if "=" in part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of each sample of the metric ``name`` in a ``/metrics`` text."""
    prefix = name + "{"
    return [
        (_labels(line), float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(prefix)
    ]


def request_counts(text: str, verbs: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Requests so far per "VERB resource" (``apiserver_request_total``), subresources apart.

    Args:
        text: A ``/metrics`` text.
        verbs: The verbs counted on each resource; other verbs and resources are left out.
    """
    counts: dict[str, float] = {}
    for lab, value in samples(text, "apiserver_request_total"):
        if lab.get("subresource"):
            continue
        resource, verb = lab.get("resource", ""), lab.get("verb", "")
        if verb in verbs.get(resource, ()):
            key = f"{verb} {resource}"
            counts[key] = counts.get(key, 0.0) + value
    return counts


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """``after`` less ``before``, key by key, leaving out what did not change."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


# -- the bench's independent watches ---------------------------------------------------------------


class NamespaceWatch:
    """An independent watch on one kind of a namespace's objects, in a daemon thread of its own.

    It lists the kind once, then watches it from that list's resource version, and watches again
    from the last version seen whenever the server ends the watch (``timeout_seconds``) or a line
    cannot be read. Each event is handed to ``on_event`` with the time it was read, taken before
    it is parsed.

    Attributes:
        ready: Set once the first watch is open.
        received: The lines read from the watches: events, bookmarks included.
        requests: The requests made: the list, then every watch.
        thread: The thread that reads the watch.
    """

    def __init__(
        self,
        list_fn: Callable[..., Any],
        namespace: str,
        on_event: Callable[[str, dict[str, Any], float], None],
        *,
        timeout_seconds: int = 300,
        bookmarks: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start watching.

        Args:
            list_fn: The API's namespaced list call, e.g. ``BatchV1Api.list_namespaced_job``.
            namespace: The namespace watched.
            on_event: Called in the watch's thread with each event's type, its object and the
                time it was read; what it raises makes the watch start again.
            timeout_seconds: How long the server keeps each watch open.
            bookmarks: Whether to ask for bookmark events (not asking leaves the parameter out).
            clock: The clock of the times given to ``on_event``.
        """
        self.namespace = namespace
        self.received = 0
        self.requests = 0
        self.ready = threading.Event()
        self._list = list_fn
        self._on_event = on_event
        self._timeout = timeout_seconds
        self._bookmarks: dict[str, bool] = {"allow_watch_bookmarks": True} if bookmarks else {}
        self._clock = clock
        self._stop = threading.Event()
        self._resp: Any = None
        # Last: a subclass sets what on_event records before calling this.
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        listed = json.loads(self._list(self.namespace, _preload_content=False).data)
        self.requests += 1
        rv = listed["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            self._resp = self._list(
                self.namespace,
                watch=True,
                resource_version=rv,
                timeout_seconds=self._timeout,
                _preload_content=False,
                **self._bookmarks,
            )
            self.requests += 1
            self.ready.set()
            try:
                for line in iter_resp_lines(self._resp):
                    now = self._clock()
                    self.received += 1
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    self._on_event(event["type"], obj, now)
            except Exception:  # the watch was closed by stop(), or broke: watch again
                if self._stop.is_set():
                    return

    def stop(self, join_timeout: float | None = None) -> None:
        """End the watch; wait up to ``join_timeout`` seconds for its thread (None: do not)."""
        self._stop.set()
        if self._resp is not None:
            # Shut down, not only closed: closing waits for the reader blocked on the socket,
            # until the server's next event or its watch timeout (minutes without bookmarks).
            abort(self._resp)
        if join_timeout is not None:
            self.thread.join(timeout=join_timeout)


class JobTimes(NamespaceWatch):
    """An independent watch on a namespace's Jobs: when each was first seen, and seen ended.

    Attributes:
        created: When each Job (by name) was first seen added or modified.
        finished: When each Job was first seen with a terminal condition.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        namespace: str,
        *,
        timeout_seconds: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.created: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        super().__init__(
            k8s.BatchV1Api(api).list_namespaced_job,
            namespace,
            self._seen,
            timeout_seconds=timeout_seconds,
            clock=clock,
        )

    def _seen(self, etype: str, obj: dict[str, Any], now: float) -> None:
        if etype not in ("ADDED", "MODIFIED"):
            return
        name = obj["metadata"]["name"]
        self.created.setdefault(name, now)
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in TERMINAL:
                self.finished.setdefault(name, now)
