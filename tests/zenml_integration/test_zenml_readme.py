"""The README's "Use with ZenML" section, run as written in a ZenML of its own.

Two recipes: the production stack's commands are what ``make demo-zenml-server`` (and the
production tests) register on the local cluster, the same commands with the same options
(``examples/zenml/server_stack.py``); the local-mode commands run here in order, in a fresh
``ZENML_CONFIG_PATH`` (registration sends nothing). ``pip install`` is what ``make venv-zenml``
does (with ``pip check``); every ``make`` command runs in CI. The step snippet runs with ZenML.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

zenml = pytest.importorskip("zenml")

from examples.zenml import server_stack  # noqa: E402
from tests.zenml_integration.conftest import ZenMLProject, zenml_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Use with ZenML\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return [b.split("```", 1)[0] for b in section().split(f"```{language}\n")[1:]]


def lines(block: str) -> list[str]:
    found = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command:
            found.append(command)
    return found


def production() -> list[str]:
    (block,) = [b for b in blocks("sh") if "zenml orchestrator register" in b]
    return lines(block)


def local() -> list[str]:
    return [c for b in blocks("sh") if "zenml orchestrator register" not in b for c in lines(b)]


def test_every_command_is_run_here_or_in_ci() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    demo = (ROOT / "examples" / "zenml" / "demo_server.py").read_text()
    stack = (ROOT / "examples" / "zenml" / "server_stack.py").read_text()
    for command in [*production(), *local()]:
        if command.startswith("zenml "):
            continue
        if command.startswith("make "):
            assert f"{command.split()[0]} {command.split()[1]}" in ci, command
        elif command.startswith("pip install 'k8s-step-operator[zenml]'"):
            assert "'.[zenml,dev]'" in makefile and "pip check" in makefile
        elif command.startswith("helm install"):
            assert '"pipeline.rbac.zenmlOrchestrator=true"' in demo
        elif command.startswith("export ZENML_STORE_URL="):
            assert "ZENML_STORE_URL=" in stack and "ZENML_STORE_API_KEY=" in stack
        else:
            raise AssertionError(f"README command run nowhere: {command}")


def _shape(words: list[str]) -> tuple[tuple[str, ...], set[str]]:
    """A command's subcommand path and its option names."""
    path = tuple(w for w in words[:3] if not w.startswith("-"))[:2]
    options = {w.split("=", 1)[0] for w in words if w.startswith("-")}
    return path, options


def test_the_production_recipe_is_what_the_demo_registers() -> None:
    services = server_stack.Services("http://z:8080", "key", "http://s3:8333", "b", "a", "s")
    spec = server_stack.local_spec(
        "ml", pipeline_account="p", step_account="s", kube_context="ctx", prefix="demo"
    )
    registered = [_shape(["zenml", *args]) for args in server_stack.registration(services, spec)]
    readme = [_shape(shlex.split(c)) for c in production() if c.startswith("zenml ")]
    # The same commands in the same order, each with at least the README's options (the demo
    # adds the local cluster's: the object store's endpoint, the real node's placement).
    assert [path for path, _ in readme] == [path for path, _ in registered]
    for (path, theirs), (_, ours) in zip(readme, registered, strict=True):
        assert theirs - {"--gpu_type"} <= ours, (path, theirs - ours)


def test_the_local_zenml_commands_run_as_written(tmp_path: Path) -> None:
    project = ZenMLProject(root=tmp_path, env=zenml_env(tmp_path / "config"))
    project.repo.mkdir()
    zenml_cli = str(Path(sys.executable).parent / "zenml")
    ran = []
    for command in local():
        if not command.startswith("zenml "):
            continue
        words = shlex.split(command)
        done = project.run([zenml_cli, *words[1:]], timeout=180)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        ran.append(words[1])
    assert "init" in ran and "stack" in ran and "step-operator" in ran
    described = " ".join(project.zenml("step-operator", "describe", "gpu-jobs").stderr.split())
    described += " ".join(project.zenml("step-operator", "describe", "gpu-jobs").stdout.split())
    assert "NVIDIA-H100-80GB-HBM3" in described and "zenml-stores" in described


def test_the_step_snippet_runs() -> None:
    (snippet,) = [b for b in blocks("python") if "@step(" in b]
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    train = namespace["train"]
    settings = train.configuration.settings  # type: ignore[attr-defined]
    assert settings["step_operator:gpu-jobs"].model_dump()["shm_size"] == "16Gi"
    assert settings["resources"].gpu_count == 2
