"""Fixtures of the ZenML tests: a ZenML of its own per test module, and its stack on the cluster.

Everything ZenML does here happens in subprocesses (``zenml_tool.py``, the pipeline scripts,
the ``zenml`` command line) with ``ZENML_CONFIG_PATH`` in the module's temporary directory, so
each module has its own SQLite store, local artifact store and stacks, and nothing of the
user's ZenML is touched.

``zenml_stack`` is the whole local-mode setup a user of the real node makes: a namespace with
the Helm chart installed (the operator acts as the chart's pipeline ServiceAccount, with its
least privilege), a ``local`` PersistentVolume on the real node for the directory of ZenML's
local stores and a claim bound to it, and ZenML (``zenml init``, the flavor, the step operator
component in local mode, the stack). The PersistentVolume is cluster-wide: it is named after
the namespace and deleted at the end.

The tests need ZenML (``pip install -e '.[zenml,dev]'``, ``make venv-zenml``): an environment
without it does not collect them (``tests/conftest.py``); ``make test`` runs them in the ZenML
environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOOL = HERE / "zenml_tool.py"
PIPELINES = HERE / "pipelines" / "zpipelines.py"
REAL_LABEL = "k8s-step-operator.io/real-node"
REAL_NODE = "real-node-0"
ZENML_IMAGE = "localhost/k8s-step-operator-zenml:dev"
STORAGE_CLASS = "local-storage"
# Quiet, and the same everywhere: no telemetry, no colours, plain tracebacks.
QUIET = {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_COLORS_DISABLED": "true",
    "ZENML_AUTO_OPEN_DASHBOARD": "false",
}
# Steps without GPUs must still tolerate the real node's taints to land there.
REAL_NODE_PLACEMENT: dict[str, Any] = {
    "node_selector": {REAL_LABEL: "true"},
    "tolerations": [
        {"key": REAL_LABEL, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
}


def zenml_env(config: Path, **extra: str) -> dict[str, str]:
    """The environment of a ZenML process using the configuration directory ``config``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZENML_")}
    env.update(QUIET)
    env["ZENML_CONFIG_PATH"] = str(config)
    env.update(extra)
    return env


@dataclass
class ZenMLProject:
    """One isolated ZenML: its configuration directory, its source root, how to run things."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def local_stores(self) -> Path:
        return self.config / "local_stores"

    def run(
        self, argv: list[str], *, timeout: float = 300, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the source root with this ZenML's environment."""
        return subprocess.run(
            argv,
            cwd=self.repo,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def tool(self, *args: str, timeout: float = 300) -> str:
        done = self.run([sys.executable, str(TOOL), *args], timeout=timeout)
        assert done.returncode == 0, f"zenml_tool {args}:\n{done.stdout}\n{done.stderr}"
        # The tool's answer, marked (zenml_tool.ANSWER): other lines may follow it.
        marked = [x for x in done.stdout.splitlines() if x.startswith("zenml_tool answer: ")]
        assert marked, f"zenml_tool {args} gave no answer:\n{done.stdout}\n{done.stderr}"
        return marked[-1].removeprefix("zenml_tool answer: ")

    def zenml(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The ``zenml`` command line of this environment."""
        return self.run([str(Path(sys.executable).parent / "zenml"), *args], timeout=timeout)

    def pipeline(
        self, name: str, *, timeout: float = 600, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one pipeline of ``zpipelines.py`` to its end."""
        return self.run([sys.executable, PIPELINES.name, name], timeout=timeout, env=env)

    def start_pipeline(self, name: str, env: Mapping[str, str] | None = None) -> Any:
        return subprocess.Popen(
            [sys.executable, PIPELINES.name, name],
            cwd=self.repo,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def last_run(self, pipeline: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.tool("runs", pipeline))
        return data


def new_project(root: Path, component: Mapping[str, Any]) -> ZenMLProject:
    """``zenml init`` in ``root/repo``, the flavor, component ``k8s`` and stack ``s`` active."""
    project = ZenMLProject(root=root)
    project.repo.mkdir(parents=True)
    shutil.copy(PIPELINES, project.repo / PIPELINES.name)
    project.env = zenml_env(project.config)
    project.tool("setup", str(project.repo), json.dumps(dict(component)))
    return project


# ---------------------------------------------------------------------------------------------
# The cluster side


def cleanup(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Delete something the test made, riding out an API server restart (other engineers' tests
    restart it on a shared cluster); gone already is fine."""
    import urllib3
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + 90
    while True:
        try:
            fn(*args, **kwargs)
            return
        except ApiException as e:
            if e.status == 404:
                return
            if e.status < 500 or time.monotonic() > deadline:
                raise
        except (urllib3.exceptions.HTTPError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(2)


def _admin_core(api_client: Any) -> Any:
    from kubernetes import client as k8s

    return k8s.CoreV1Api(api_client)


@dataclass
class ChartInstall:
    namespace: str
    release: str
    pipeline_account: str
    step_account: str
    kubeconfig: Path


@contextlib.contextmanager
def chart_in_namespace(
    helm_bin: str,
    kubeconfig: Path,
    api_client: Any,
    namespace: str,
    workdir: Path,
    values: Mapping[str, Any] | None = None,
) -> Iterator[ChartInstall]:
    """The chart in ``namespace`` (default values, or ``values``); its pipeline account's
    kubeconfig."""
    from tests.cluster.conftest import release_name, request_token, run, write_kubeconfig

    release = release_name(namespace, "zenml")
    common = ["--namespace", namespace, "--kubeconfig", str(kubeconfig)]
    extra: list[str] = []
    if values:
        values_file = workdir / f"values-{release}.yaml"
        values_file.write_text(yaml.safe_dump(dict(values)))
        extra = ["--values", str(values_file)]
    chart = str(REPO / "charts" / "k8s-step-operator")
    run([helm_bin, "install", release, chart, *common, *extra])
    try:
        manifest = run([helm_bin, "get", "manifest", release, *common]).stdout
        accounts = {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"]
            for d in yaml.safe_load_all(manifest)
            if d and d.get("kind") == "ServiceAccount"
        }
        token = request_token(api_client, namespace, accounts["pipeline"])
        path = write_kubeconfig(workdir / "pipeline.kubeconfig", api_client, token, namespace)
        yield ChartInstall(namespace, release, accounts["pipeline"], accounts["step"], path)
    finally:
        deadline = time.monotonic() + 90
        while True:
            done = run(
                [helm_bin, "uninstall", release, *common, "--wait", "--timeout", "60s"],
                check=False,
            )
            if done.returncode == 0 or "not found" in done.stderr:
                break
            assert time.monotonic() < deadline, f"helm uninstall {release}: {done.stderr}"
            time.sleep(2)


@contextlib.contextmanager
def own_namespace(api_client: Any, stem: str) -> Iterator[str]:
    """A fresh namespace (for a module), deleted in the background afterwards."""
    from kubernetes import client as k8s

    from tests.conftest import create_test_namespace

    core = _admin_core(api_client)
    name = create_test_namespace(api_client, f"t-{stem}-{uuid.uuid4().hex[:6]}")
    try:
        yield name
    finally:
        cleanup(
            core.delete_namespace, name, body=k8s.V1DeleteOptions(propagation_policy="Background")
        )


@contextlib.contextmanager
def local_stores_claim(
    api_client: Any, namespace: str, path: Path, *, claim: str = "zenml-stores"
) -> Iterator[str]:
    """A ``local`` PersistentVolume for ``path`` on the real node, and a claim bound to it.

    The volume is made by ``e2e/cluster.py local-pv``'s function and named after the namespace;
    the claim names it (``volumeName``), so that no other claim takes it and it binds at once.
    """

    from tests.conftest import load_cluster_module

    mod = load_cluster_module()
    pv = f"{namespace}-stores"
    mod.create_local_pv(mod.State.load(), pv, str(path), REAL_NODE, size="1Gi")
    core = _admin_core(api_client)
    try:
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": STORAGE_CLASS,
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        deadline = time.monotonic() + 60
        while core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase != (
            "Bound"
        ):
            assert time.monotonic() < deadline, f"claim {claim} did not bind to {pv}"
            time.sleep(0.2)
        yield claim
    finally:
        cleanup(core.delete_namespaced_persistent_volume_claim, claim, namespace)
        cleanup(core.delete_persistent_volume, pv)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """The Helm binary the cluster tests use (``tests/cluster/conftest.py``)."""
    from tests.cluster.conftest import _cache, _tool, _versions

    version = _versions()["HELM_VERSION"]
    return _tool(
        "helm", _cache() / "bin" / f"helm-{version}" / "helm", "bash e2e/build/build.sh helm"
    )


def zenml_image_present(api_client: Any) -> bool:
    node = _admin_core(api_client).read_node(REAL_NODE)
    names = {n for image in node.status.images or () for n in image.names or ()}
    return ZENML_IMAGE in names


@dataclass
class ZenMLStack:
    """A local-mode ZenML whose steps run on the real node."""

    project: ZenMLProject
    namespace: str
    claim: str
    chart: ChartInstall
    component: dict[str, Any]


@pytest.fixture(scope="module")
def zenml_stack(
    request: pytest.FixtureRequest,
    api_client: Any,
    kubeconfig_path: Path,
    helm_bin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ZenMLStack]:
    from tests.conftest import _probe_realnode, unavailable

    reason = _probe_realnode()
    if reason:
        unavailable(reason)
    if not zenml_image_present(api_client):
        unavailable(
            f"{ZENML_IMAGE} is not on {REAL_NODE}: run `make zenml-image` "
            "(python e2e/realnode/node.py images zenml)"
        )
    root = tmp_path_factory.mktemp("zenml")
    stem = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20].replace("_", "-")
    with (
        own_namespace(api_client, stem) as namespace,
        chart_in_namespace(helm_bin, kubeconfig_path, api_client, namespace, root) as chart,
    ):
        component: dict[str, Any] = {
            "kubeconfig_path": str(chart.kubeconfig),
            "namespace": namespace,
            "service_account_name": chart.step_account,
            "local": True,
            "local_stores_claim": "zenml-stores",
            "pending_timeout": 120,
            "image_pull_policy": "IfNotPresent",
            **REAL_NODE_PLACEMENT,
        }
        if os.getuid() == 0:
            # Local mode runs the pods as this user, so that they write the local stores.
            component["pod_security_profile"] = "none"
        project = new_project(root, component)
        with local_stores_claim(api_client, namespace, project.local_stores) as claim:
            yield ZenMLStack(project, namespace, claim, chart, component)
