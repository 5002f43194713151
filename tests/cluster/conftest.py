"""Fixtures that install the Helm chart and act as the pipeline's ServiceAccount.

The chart is what admins install, so the tests that prove least privilege (and the launch tests
that run as the pipeline) use exactly its objects: ``helm install`` into the test's namespace,
a token for the pipeline ServiceAccount from the TokenRequest API, and an ``ApiClient`` that
authenticates with that token against the same server and CA as the admin kubeconfig.

Builds on the shared fixtures of ``tests/conftest.py``: ``kubeconfig_path``, ``api_client``
(admin) and ``namespace`` (a fresh namespace per test).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from k8s_step_operator._kube.client import disable_transport_retries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "k8s-step-operator"
MANIFESTS = ROOT / "manifests"
IN_CI = os.environ.get("CI") == "true"
TOKEN_SECONDS = 3600


def _versions() -> dict[str, str]:
    versions = {}
    for line in (ROOT / "e2e" / "build" / "versions.env").read_text().splitlines():
        key, eq, value = line.partition("=")
        if eq and not key.startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


def _cache() -> Path:
    return Path(
        os.environ.get("K8SSO_CACHE", Path.home() / ".cache" / "k8s-step-operator")
    ).expanduser()


def _tool(name: str, cached: Path, build_hint: str) -> str:
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found at {cached} nor on PATH: run {build_hint}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """The Helm binary built by ``e2e/build/build.sh helm`` (or Helm on PATH)."""
    version = _versions()["HELM_VERSION"]
    return _tool(
        "helm", _cache() / "bin" / f"helm-{version}" / "helm", "bash e2e/build/build.sh helm"
    )


@pytest.fixture(scope="session")
def kubectl_bin() -> str:
    """The kubectl built with the cluster (or kubectl on PATH)."""
    version = _versions()["KUBERNETES_VERSION"]
    return _tool(
        "kubectl",
        _cache() / "bin" / f"kubernetes-{version}" / "kubectl",
        "bash e2e/build/build.sh kubernetes",
    )


def run(
    argv: list[str], *, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure show its output in the test report."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def release_name(namespace: str, suffix: str = "") -> str:
    """A release name unique per namespace (cluster-scoped objects carry it), within 53 chars."""
    digest = hashlib.sha1(f"{namespace}/{suffix}".encode()).hexdigest()[:8]
    return f"sso-{digest}"


def service_account_client(admin: k8s.ApiClient, token: str) -> k8s.ApiClient:
    """An ApiClient for ``token`` with the admin's server and CA, and nothing else of the admin."""
    source = admin.configuration
    config = k8s.Configuration()
    config.host = source.host
    config.ssl_ca_cert = source.ssl_ca_cert
    config.verify_ssl = source.verify_ssl
    config.api_key = {"authorization": token}
    config.api_key_prefix = {"authorization": "Bearer"}
    # As the library's own clients: retries are decided by `_client.call` alone.
    disable_transport_retries(config)
    return k8s.ApiClient(config)


def write_kubeconfig(path: Path, admin: k8s.ApiClient, token: str, namespace: str) -> Path:
    """A kubeconfig holding only ``token``, for the admin's server and CA."""
    cfg = admin.configuration
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert},
                    }
                ],
                "users": [{"name": "pipeline", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "pipeline",
                        "context": {"cluster": "c", "user": "pipeline", "namespace": namespace},
                    }
                ],
                "current-context": "pipeline",
            }
        )
    )
    return path


def request_token(admin: k8s.ApiClient, namespace: str, service_account: str) -> str:
    """A short-lived token for a ServiceAccount, from the TokenRequest API."""
    body = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    answer = k8s.CoreV1Api(admin).create_namespaced_service_account_token(
        service_account, namespace, body
    )
    return str(answer.status.token)


@dataclass
class OperatorIdentity:
    """The chart installed in a namespace, seen as its pipeline ServiceAccount.

    Attributes:
        namespace: Where the chart's namespaced objects (and the steps) are.
        release: The Helm release name.
        service_account: The pipeline ServiceAccount's name.
        step_service_account: The step pods' ServiceAccount's name.
        token: A token of the pipeline ServiceAccount (valid ``TOKEN_SECONDS``).
        api_client: A client authenticated with that token.
        values: The values the chart was installed with.
    """

    namespace: str
    release: str
    service_account: str
    step_service_account: str
    token: str
    api_client: k8s.ApiClient
    values: Mapping[str, Any] = field(default_factory=dict)


InstallChart = Callable[..., OperatorIdentity]


@pytest.fixture
def install_chart(
    helm_bin: str, kubeconfig_path: Any, api_client: k8s.ApiClient, tmp_path: Path
) -> Iterator[InstallChart]:
    """Install the chart with given values; every release is uninstalled afterwards.

    Call it as ``install_chart(namespace, values={...}, suffix="")``; ``suffix`` tells apart
    two releases in one namespace.
    """
    installed: list[tuple[str, str]] = []
    clients: list[k8s.ApiClient] = []

    def install(
        namespace: str, values: Mapping[str, Any] | None = None, suffix: str = ""
    ) -> OperatorIdentity:
        release = release_name(namespace, suffix)
        values_file = tmp_path / f"values-{release}.yaml"
        values_file.write_text(yaml.safe_dump(dict(values or {})))
        run(
            [
                helm_bin,
                "install",
                release,
                str(CHART),
                "--namespace",
                namespace,
                "--kubeconfig",
                str(kubeconfig_path),
                "--values",
                str(values_file),
            ]
        )
        installed.append((release, namespace))
        manifest = run(
            [
                helm_bin,
                "get",
                "manifest",
                release,
                "--namespace",
                namespace,
                "--kubeconfig",
                str(kubeconfig_path),
            ]
        ).stdout
        accounts = {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"]
            for d in yaml.safe_load_all(manifest)
            if d and d.get("kind") == "ServiceAccount"
        }
        steps_namespace = (values or {}).get("namespace", {}).get("name") or namespace
        pipeline_sa = accounts.get("pipeline", "")
        token = request_token(api_client, steps_namespace, pipeline_sa) if pipeline_sa else ""
        sa_client = service_account_client(api_client, token)
        clients.append(sa_client)
        return OperatorIdentity(
            namespace=steps_namespace,
            release=release,
            service_account=pipeline_sa,
            step_service_account=accounts.get("step", ""),
            token=token,
            api_client=sa_client,
            values=dict(values or {}),
        )

    yield install
    for sa_client in clients:
        sa_client.close()
    for release, namespace in reversed(installed):
        run(
            [
                helm_bin,
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--kubeconfig",
                str(kubeconfig_path),
                "--wait",
                "--timeout",
                "60s",
            ],
            check=False,
        )


@pytest.fixture
def operator_sa(install_chart: InstallChart, namespace: str) -> OperatorIdentity:
    """The chart with default values in the test's namespace, as its pipeline ServiceAccount.

    ``operator_sa.api_client`` is what a pipeline gets from an admin: least privilege, the Jobs,
    pods, logs and events of this namespace, and read-only nodes.
    """
    return install_chart(namespace)
