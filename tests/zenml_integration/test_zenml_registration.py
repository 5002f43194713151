"""ZenML's command line registers the flavor, the component with our fields and a stack, and a
stack whose step pods could not reach ZenML's stores is refused when a pipeline is submitted.

No cluster is needed: ZenML checks the stack before anything is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from tests.zenml_integration.conftest import (  # noqa: E402
    ZenMLProject,
    new_project,
    zenml_env,
)

SOURCE = "k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor"
NOWHERE = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
    "current-context": "x",
}


def ok(done: Any) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return f"{done.stdout}\n{done.stderr}"


def refused(done: Any) -> str:
    assert done.returncode != 0, f"{done.args} succeeded:\n{done.stdout}"
    return f"{done.stdout}\n{done.stderr}"


def test_the_command_line_registers_flavor_component_and_stack(tmp_path: Path) -> None:
    project = ZenMLProject(root=tmp_path, env=zenml_env(tmp_path / "config"))
    project.repo.mkdir()
    ok(project.zenml("init"))
    assert "Successfully registered new flavor 'kubernetes_job'" in " ".join(
        ok(project.zenml("step-operator", "flavor", "register", SOURCE)).split()
    )
    ok(
        project.zenml(
            "step-operator",
            "register",
            "k8s",
            "--flavor=kubernetes_job",
            "--namespace=ml",
            "--gpu_type=NVIDIA-H100-80GB-HBM3",
            '--node_selector={"pool": "gpu"}',
            '--tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", '
            '"effect": "NoSchedule"}]',
            '--secret_env={"HF_TOKEN": {"name": "hf", "key": "token"}}',
            "--pending_timeout=30",
            "--local=true",
            "--local_stores_claim=zenml-stores",
        )
    )
    described = " ".join(ok(project.zenml("step-operator", "describe", "k8s")).split())
    for text in ("NVIDIA-H100-80GB-HBM3", "zenml-stores", "dedicated", "pool"):
        assert text in described
    ok(project.zenml("stack", "register", "s", "-o", "default", "-a", "default", "-s", "k8s"))
    ok(project.zenml("stack", "set", "s"))
    # ZenML refuses keys the flavor does not have, and our checks refuse bad values.
    bogus = refused(
        project.zenml("step-operator", "register", "x", "--flavor=kubernetes_job", "--bogus=1")
    )
    assert "bogus" in bogus
    bad = refused(
        project.zenml("step-operator", "register", "y", "--flavor=kubernetes_job", "--gpu_count=-1")
    )
    assert "config.gpu_count" in bad
    secret = refused(
        project.zenml(
            "step-operator",
            "register",
            "z",
            "--flavor=kubernetes_job",
            '--secret_env={"HF_TOKEN": "hf_the-token-itself"}',
        )
    )
    assert "not a value" in secret and "hf_the-token-itself" not in secret


@pytest.fixture
def nowhere(tmp_path: Path) -> str:
    path = tmp_path / "nowhere.kubeconfig"
    path.write_text(json.dumps(NOWHERE))
    return str(path)


def test_a_stack_whose_pods_cannot_reach_a_local_store_is_refused(
    tmp_path: Path, nowhere: str
) -> None:
    project = new_project(tmp_path / "remote", {"kubeconfig_path": nowhere, "namespace": "ml"})
    why = " ".join(refused(project.pipeline("three_steps", timeout=180)).split())
    assert "Custom validation function failed to validate stack 's'" in why
    assert "step operator 'k8s' runs steps in pods on a Kubernetes cluster" in why
    assert "the ZenML store is local (sqlite:///" in why
    assert "the artifact store 'default' is a local directory" in why
    assert "zenml step-operator update k8s --local=true --local_stores_claim=<claim>" in why
    # Nothing got near a cluster: the kubeconfig points nowhere, and the run never started.
    assert "Step `load_data` has started" not in why


def test_local_mode_without_a_claim_is_refused(tmp_path: Path, nowhere: str) -> None:
    project = new_project(
        tmp_path / "noclaim", {"kubeconfig_path": nowhere, "namespace": "ml", "local": True}
    )
    why = " ".join(refused(project.pipeline("three_steps", timeout=180)).split())
    assert "is in local mode but names no PersistentVolumeClaim" in why
    assert str(project.local_stores) in why
