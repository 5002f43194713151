"""Fixtures shared by every test tier: the cluster the suite talks to, and how to use it.

Tests that need Kubernetes carry the ``cluster`` marker (or ``realnode`` for the node that runs
real containers). They talk to the cluster named by ``$KUBECONFIG``, or else to the local one
started by ``make cluster`` (``.cluster/kubeconfig``). When none is reachable they are skipped
with the reason outside CI, and fail in CI (``CI=true``), where a missing cluster is a broken
build, not a reason to pass.

Tests find nodes by labels, never by name: ``gpu_pools`` / ``gpu_pool`` read the pool definitions
from ``e2e/nodes.yaml`` and look the matching nodes up in whatever cluster is in use, so the same
tests run against kind or a real cluster labelled the same way. ``local_cluster`` is only for
tests that stop and start control-plane components or add simulated nodes; it refuses any cluster
but our own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# The ZenML tests run in the ZenML environment (`make test-zenml`, part of `make test`); an
# environment without ZenML does not collect them, rather than report them skipped.
collect_ignore_glob = [] if importlib.util.find_spec("zenml") else ["zenml_integration/*"]
# The cluster e2e/cluster.py runs: the checkout's, or K8SSO_CLUSTER_DIR's (as the script reads it).
LOCAL_KUBECONFIG = Path(os.environ.get("K8SSO_CLUSTER_DIR") or REPO / ".cluster") / "kubeconfig"
NODES_FILE = REPO / "e2e" / "nodes.yaml"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"

# Annotations the simulated kubelet (KWOK stages in e2e/kwok/pod-stages.yaml) acts on.
SIM_RUN_DURATION = "sim.k8s-step-operator.io/run-duration"
SIM_EXIT_CODE = "sim.k8s-step-operator.io/exit-code"
SIM_REASON = "sim.k8s-step-operator.io/reason"
SIM_START_DELAY = "sim.k8s-step-operator.io/start-delay"
SIM_MESSAGE = "sim.k8s-step-operator.io/message"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


T = TypeVar("T")


def wait_until(
    what: str, fn: Callable[[], T | None], timeout: float = 60, interval: float = 0.2
) -> T:
    """``fn()``'s first truthy value, polled every ``interval`` s for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def poll(fn: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    """Whether ``fn()`` became true within ``timeout`` s (polled every ``interval`` s)."""
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where the cluster is part of the build."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: what the tests need is part of the build)", pytrace=False)
    pytest.skip(reason)


def _kubeconfig_path() -> Path:
    env = os.environ.get("KUBECONFIG", "").strip()
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return LOCAL_KUBECONFIG


_probe_cache: dict[str, str | None] = {}


def _probe_cluster() -> str | None:
    """None when the cluster answers; otherwise why it cannot be used (cached per session)."""
    if "cluster" in _probe_cache:
        return _probe_cache["cluster"]
    path = _kubeconfig_path()
    reason: str | None = None
    if not path.exists():
        reason = (
            f"no cluster: kubeconfig {path} does not exist "
            "(run `make cluster`, or set KUBECONFIG to another cluster)"
        )
    else:
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(config_file=str(path))
            try:
                client.VersionApi(api).get_code(_request_timeout=5)
            finally:
                api.close()
        except Exception as e:  # any failure means: not usable
            reason = f"no cluster reachable through {path}: {type(e).__name__}: {e}"[:500]
    _probe_cache["cluster"] = reason
    return reason


def _probe_realnode() -> str | None:
    if "realnode" in _probe_cache:
        return _probe_cache["realnode"]
    reason = _probe_cluster()
    if reason is None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(_kubeconfig_path()))
        try:
            nodes = client.CoreV1Api(api).list_node(_request_timeout=10).items
        finally:
            api.close()
        real = [
            n.metadata.name
            for n in nodes
            if (n.metadata.annotations or {}).get(KWOK_ANNOTATION) != "fake" and _is_ready(n)
        ]
        if not real:
            reason = "no Ready node that runs real containers (only simulated nodes found)"
    _probe_cache["realnode"] = reason
    return reason


def _is_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("realnode") is not None:
        reason = _probe_realnode()
        if reason:
            unavailable(reason)
    elif item.get_closest_marker("cluster") is not None:
        reason = _probe_cluster()
        if reason:
            unavailable(reason)


# ---------------------------------------------------------------------------------------------
# The cluster


@pytest.fixture(scope="session")
def kubeconfig_path() -> Path:
    """``$KUBECONFIG`` (its first file) if set, else the local cluster's ``.cluster/kubeconfig``."""
    return _kubeconfig_path()


@pytest.fixture(scope="session")
def api_client(kubeconfig_path: Path) -> Iterator[Any]:
    """An admin ``kubernetes.client.ApiClient`` for the cluster under test."""
    reason = _probe_cluster()
    if reason:
        unavailable(reason)
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig_path))
    yield api
    api.close()


def create_test_namespace(api_client: Any, name: str) -> str:
    """Create namespace ``name`` (labelled as a test's) and wait for its ``default`` account.

    Pods created before that ServiceAccount exists are refused.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"k8s-step-operator.io/test": "true"})
        )
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower().removeprefix("test_")).strip("-")
    suffix = secrets.token_hex(3)
    stem = stem[: 63 - len("t--") - len(suffix)].strip("-") or "x"
    return f"t-{stem}-{suffix}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted (in the background) afterwards.

    Waits until the namespace's ``default`` ServiceAccount exists, so that pods created right
    away are not refused.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    name = create_test_namespace(api_client, _namespace_name(request.node.name))
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name, body=client.V1DeleteOptions(propagation_policy="Background"))


# ---------------------------------------------------------------------------------------------
# GPU pools


@dataclass(frozen=True)
class GpuPool:
    """One kind of node, as a workload reaches it, and the nodes of that kind in the cluster."""

    name: str
    resource: str
    per_node: int
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    nodes: tuple[str, ...] = ()
    description: str = ""
    taints: Sequence[Mapping[str, str]] = field(default_factory=list)

    def placement(self) -> dict[str, Any]:
        """``nodeSelector`` and ``tolerations`` for a pod spec that targets this pool."""
        return {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }

    def limits(self, count: int) -> dict[str, str]:
        """Resource limits asking for ``count`` units of the pool's accelerator."""
        return {self.resource: str(count)}


def load_pool_definitions(path: Path = NODES_FILE) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return dict(data.get("pools") or {})


@pytest.fixture(scope="session")
def gpu_pools(api_client: Any) -> dict[str, GpuPool]:
    """Every pool of ``e2e/nodes.yaml`` that has at least one Ready node in this cluster."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    pools: dict[str, GpuPool] = {}
    for name, d in load_pool_definitions().items():
        selector = ",".join(f"{k}={v}" for k, v in d["node_selector"].items())
        nodes = [n for n in core.list_node(label_selector=selector).items if _is_ready(n)]
        if not nodes:
            continue
        taints = [
            {"key": t.key, "value": t.value or "", "effect": t.effect}
            for t in (nodes[0].spec.taints or [])
        ]
        pools[name] = GpuPool(
            name=name,
            resource=d["resource"],
            per_node=int(d["per_node"]),
            node_selector=dict(d["node_selector"]),
            tolerations=list(d.get("tolerations") or []),
            nodes=tuple(sorted(n.metadata.name for n in nodes)),
            description=d.get("description", ""),
            taints=taints,
        )
    return pools


@pytest.fixture(scope="session")
def gpu_pool(gpu_pools: dict[str, GpuPool]) -> GpuPool:
    """The default GPU pool: H100 nodes with ``nvidia.com/gpu``, or any ``nvidia.com/gpu`` pool."""
    if "h100" in gpu_pools:
        return gpu_pools["h100"]
    for pool in gpu_pools.values():
        if pool.resource == "nvidia.com/gpu":
            return pool
    unavailable(
        "no Ready node matches a `nvidia.com/gpu` pool of e2e/nodes.yaml "
        "(label the cluster's GPU nodes as described there)"
    )
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Our own cluster


def load_cluster_module() -> ModuleType:
    """``e2e/cluster.py`` as a module (it is a script, not part of the package)."""
    name = "k8sso_e2e_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "e2e" / "cluster.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


class LocalCluster:
    """Control over the local cluster's processes and simulated nodes, for disruption tests."""

    def __init__(self, mod: ModuleType) -> None:
        self._mod = mod
        self.state = mod.State.load()
        self.kubeconfig: Path = self.state.kubeconfig
        self.components: tuple[str, ...] = tuple(mod.COMPONENTS)
        node_file = mod.load_node_file()
        self.nodes: list[dict[str, Any]] = list(node_file["nodes"])
        self.pools: dict[str, dict[str, Any]] = dict(node_file.get("pools") or {})
        self._stopped: set[str] = set()

    def _check(self, component: str) -> None:
        if component not in self.components:
            raise ValueError(
                f"component must be one of {', '.join(self.components)}; got {component!r}"
            )

    def stop(self, component: str) -> None:
        """Stop one component (TERM, then KILL); the session restarts it if a test does not."""
        self._check(component)
        self._stopped.add(component)
        self._mod.stop_process(self.state, component)

    def start(self, component: str, timeout: float = 180) -> None:
        """Start a stopped component and wait until it reports healthy (as ``cluster.py``)."""
        self._check(component)
        self._mod.restart_component(self.state, component, timeout)
        self._stopped.discard(component)

    def restart(self, component: str, timeout: float = 180) -> None:
        self.stop(component)
        self.start(component, timeout)

    def is_healthy(self, component: str) -> bool:
        self._check(component)
        return bool(self._mod.healthy(self.state, component))

    @contextlib.contextmanager
    def stopped(self, component: str) -> Iterator[None]:
        """``with local_cluster.stopped("kube-controller-manager"): ...`` then start it again."""
        self.stop(component)
        try:
            yield
        finally:
            self.start(component)

    def add_nodes(self, specs: Sequence[Mapping[str, Any]], timeout: float = 60) -> list[str]:
        """Create simulated nodes (entries shaped like ``e2e/nodes.yaml``'s) and wait for Ready.

        Remove them with ``remove_nodes`` at the end of the test: they outlive it otherwise.
        """
        names: list[str] = self._mod.ensure_nodes(self.state, specs)
        self._mod.wait_for(
            "nodes to be Ready", lambda: self._mod.nodes_ready(self.state, names), timeout
        )
        return names

    def write_pod_log(
        self,
        namespace: str,
        pod: str,
        lines: Sequence[str],
        *,
        container: str | None = None,
        append: bool = True,
    ) -> Path:
        """Give a pod its own log (CRI format, timestamped now), served through ``pods/log``.

        Appending while a client follows the log shows the new lines in its stream. Without
        this, every pod's log is two fixed lines ("simulated container started/finished").
        """
        path: Path = self._mod.write_pod_log(
            self.state, namespace, pod, lines, container=container, append=append
        )
        return path

    def remove_nodes(self, names: Sequence[str]) -> None:
        api = self._mod.Api(self.state)
        for n in names:
            api.request("DELETE", f"/api/v1/nodes/{n}")

    def restore(self) -> None:
        """Start whatever a test left stopped."""
        for c in self.components:
            if c in self._stopped or self._mod.running_pid(self.state, c) is None:
                self.start(c)


def stack_info_path() -> Path:
    """Where ``e2e/stack.py`` writes what clients need (``make stack-services``)."""
    return LOCAL_KUBECONFIG.parent / "stack" / "stack.json"


@pytest.fixture(scope="session")
def stack_info() -> dict[str, Any]:
    """The object store's and the ZenML server's addresses and credentials (``stack.json``)."""
    import json

    path = stack_info_path()
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        unavailable(f"no stack services: {path} is missing (run `make stack-services`)")
        raise AssertionError("unreachable") from None
    for part in ("s3", "zenml"):
        if part not in info:
            unavailable(f"{path} has no {part!r} entry (run `make stack-services`)")
    return info


@pytest.fixture(scope="session")
def local_cluster(kubeconfig_path: Path, api_client: Any) -> Iterator[LocalCluster]:
    """The local cluster started by ``make cluster``; refuses (skip / CI failure) any other."""
    if not LOCAL_KUBECONFIG.exists():
        unavailable("needs the local cluster (`make cluster`); .cluster/kubeconfig is missing")
    mod = load_cluster_module()
    lc = LocalCluster(mod)
    theirs = yaml.safe_load(kubeconfig_path.read_text()) or {}
    servers = {c["cluster"].get("server") for c in theirs.get("clusters") or []}
    if lc.state.server not in servers:
        unavailable(
            f"needs the local cluster; KUBECONFIG={kubeconfig_path} points at "
            f"{', '.join(sorted(s for s in servers if s)) or 'nothing'}"
        )
    yield lc
    lc.restore()
