"""Finding the cluster the way kubectl does: KUBECONFIG, ~/.kube/config, then in-cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.config import incluster_config

from k8s_step_operator import ConfigurationError
from k8s_step_operator._kube import client as kube_client


def kubeconfig(path: Path, namespace: str | None, *, context: str = "c") -> Path:
    ctx: dict[str, str] = {"cluster": "k", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": context, "context": ctx},
                    {"name": "other", "context": {"cluster": "k", "user": "u", "namespace": "o"}},
                ],
                "current-context": context,
            }
        )
    )
    return path


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(kube_client, "_SA_TOKEN_FILE", tmp_path / "no-token")
    return tmp_path


def test_the_contexts_namespace_is_the_default(
    no_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(no_cluster / "kc", "ml-steps")))
    loaded = kube_client.load_client()
    assert loaded.namespace == "ml-steps" and not loaded.in_cluster
    assert kube_client.load_client(context="other").namespace == "o"
    loaded.api_client.close()


def test_a_context_without_namespace_means_default(no_cluster: Path) -> None:
    path = kubeconfig(no_cluster / "kc", None)
    assert kube_client.load_client(str(path)).namespace == "default"


def test_home_kubeconfig_is_found(no_cluster: Path) -> None:
    (no_cluster / ".kube").mkdir()
    kubeconfig(no_cluster / ".kube" / "config", "from-home")
    assert kube_client.load_client().namespace == "from-home"


def test_in_cluster_comes_last_and_uses_the_service_accounts_namespace(
    no_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca, ns = no_cluster / "token", no_cluster / "ca.crt", no_cluster / "namespace"
    token.write_text("t")
    ca.write_text("ca")
    ns.write_text("pipelines\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setattr(kube_client, "_SA_TOKEN_FILE", token)
    monkeypatch.setattr(kube_client, "_SA_NAMESPACE_FILE", ns)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    loaded = kube_client.load_client()
    assert loaded.in_cluster and loaded.namespace == "pipelines"


def test_nothing_found_is_one_configuration_error(no_cluster: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        kube_client.load_client()
    assert raised.value.field == "kubeconfig_path"
    assert "not running in a pod" in str(raised.value)


def test_a_missing_file_and_an_unknown_context_name_the_field(no_cluster: Path) -> None:
    with pytest.raises(ConfigurationError) as missing:
        kube_client.load_client(str(no_cluster / "nope"))
    assert missing.value.field == "kubeconfig_path"
    path = kubeconfig(no_cluster / "kc", "x")
    with pytest.raises(ConfigurationError) as context:
        kube_client.load_client(str(path), context="nope")
    assert context.value.field == "kubernetes_context"
    assert "c, other" in str(context.value)


def test_a_broken_kubeconfig_is_a_configuration_error(no_cluster: Path) -> None:
    bad = no_cluster / "bad"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    with pytest.raises(ConfigurationError) as raised:
        kube_client.load_client(str(bad))
    assert raised.value.field == "kubeconfig_path"


def test_launch_turns_a_missing_kubeconfig_into_our_error(no_cluster: Path) -> None:
    from k8s_step_operator import KubernetesJobStepOperator, StepRunInfo

    op = KubernetesJobStepOperator()
    info = StepRunInfo(step_run_id="s", run_id="r", pipeline_step_name="x")
    with pytest.raises(ConfigurationError):
        op.launch(info.model_copy(update={"images": {"default": "img:1"}}), ["true"], {})
