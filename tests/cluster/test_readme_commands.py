"""The README's shell commands, run as written against the cluster.

Each command of every ``sh`` block runs here, with only the tools' paths filled in (``helm``,
``kubectl``, ``k8s-step-operator``) and the placeholder ``IMAGE`` replaced; ``make`` targets,
``pip install .`` and ``export`` run in CI (``.ci/run``), the kind commands need Docker, and
the ``zenml`` commands run in the ZenML environment (``tests/zenml_integration``).
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client as k8s

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
# Run by .ci/run (make targets, the package install) or impossible here (kind needs Docker).
ELSEWHERE = ("make ", "pip install", "export ", "kind ", "e2e/kind/fake-gpus.sh", "zenml ")
# Commands for the local cluster's real node (the one that runs containers).
REAL_NODE_SETTINGS = "examples/real-node.yaml"


def _has_real_node(api_client: k8s.ApiClient) -> bool:
    nodes = k8s.CoreV1Api(api_client).list_node(
        label_selector="k8s-step-operator.io/real-node=true"
    )
    return any(
        c.type == "Ready" and c.status == "True"
        for n in nodes.items
        for c in n.status.conditions or []
    )


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in text.split("```sh\n")[1:]:
        for line in block.split("```", 1)[0].splitlines():
            command = line.split("  #", 1)[0].strip()
            if command:
                commands.append(command)
    return commands


def helm_releases(commands: list[str]) -> list[tuple[str, str]]:
    """The (release, namespace) of each ``helm install`` among ``commands``."""
    found = []
    for command in commands:
        words = shlex.split(command)
        if words[:2] != ["helm", "install"]:
            continue
        namespace = "default"
        for flag, value in itertools.pairwise(words):
            if flag in ("-n", "--namespace"):
                namespace = value
        found.append((words[2], namespace))
    return found


def test_every_readme_command_is_accounted_for() -> None:
    commands = readme_commands()
    assert any(c.startswith("make demo") for c in commands)
    assert any(c.startswith("make test") for c in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    for c in commands:
        if c.startswith("make "):
            target = c.split()[1]
            assert f"make {target}" in ci or target in (
                "cluster",
                "cluster-down",
                "test-unit",
                "bench",
            ), c


def test_readme_commands_run(
    kubeconfig_path: Path, helm_bin: str, kubectl_bin: str, api_client: k8s.ApiClient
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig_path),
        "PATH": f"{Path(sys.executable).parent}:{Path(helm_bin).parent}:{os.environ['PATH']}",
    }
    tools = {"helm": helm_bin, "kubectl": kubectl_bin}
    ran = []
    real_node = _has_real_node(api_client)
    if not real_node and os.environ.get("CI") == "true":
        raise AssertionError("CI: the README's real-node commands need the local real node")
    try:
        for command in readme_commands():
            if command.startswith(ELSEWHERE):
                continue
            if REAL_NODE_SETTINGS in command and not real_node:
                print(f"skipped (no real node in this cluster): {command}")
                continue
            words = [os.path.expanduser(w) for w in shlex.split(command)]
            words = [tools.get(w, w) if i == 0 else w for i, w in enumerate(words)]
            words = ["localhost/step:1" if w == "IMAGE" else w for w in words]
            done = subprocess.run(
                words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran.append(command)
    finally:
        # Every release the README installs: their cluster-scoped objects (the node reader) are
        # named after the release, and would refuse another namespace's release of that name
        # (the production demo's) long after this test.
        for release, namespace in helm_releases(ran):
            subprocess.run(
                [helm_bin, "uninstall", release, "--namespace", namespace, "--wait"],
                env=env,
                capture_output=True,
                check=False,
            )
        subprocess.run(
            [kubectl_bin, "delete", "-k", "manifests/", "--wait=false"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
        subprocess.run(
            [kubectl_bin, "delete", "namespace", "ml-steps", "--wait=false"],
            env=env,
            capture_output=True,
            check=False,
        )
    assert any(c.startswith("helm install") for c in ran)
    assert ("k8sso", "ml") in helm_releases(readme_commands())
    assert ("steps", "ml-steps") in helm_releases(readme_commands())
    assert any(c.startswith("kubectl apply -k") for c in ran)
    assert any("k8s-step-operator run" in c for c in ran)
    if real_node:
        assert any(REAL_NODE_SETTINGS in c for c in ran)
    assert any("k8s-step-operator doctor" in c for c in ran)
