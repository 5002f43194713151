"""The README's "Use with ZenML" section, run as written in a ZenML of its own.

Its ``zenml`` commands run here in order, in a fresh ``ZENML_CONFIG_PATH``; ``pip install`` is
what ``make venv-zenml`` does (with ``pip check``) and ``make demo-zenml`` runs in CI. Its Python
snippet runs with ZenML (it defines a step). No cluster is needed: registration sends nothing.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

zenml = pytest.importorskip("zenml")

from tests.zenml_integration.conftest import ZenMLProject, zenml_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Use with ZenML\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return [b.split("```", 1)[0] for b in section().split(f"```{language}\n")[1:]]


def commands() -> list[str]:
    found = []
    for block in blocks("sh"):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command:
                found.append(command)
    return found


def test_every_command_is_run_here_or_in_ci() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for command in commands():
        if command.startswith("zenml "):
            continue
        if command.startswith("make "):
            assert f"{command.split()[0]} {command.split()[1]}" in ci, command
        elif command.startswith("pip install 'k8s-step-operator[zenml]'"):
            assert "'.[zenml,dev]'" in makefile and "pip check" in makefile
        else:
            raise AssertionError(f"README command run nowhere: {command}")


def test_the_zenml_commands_run_as_written(tmp_path: Path) -> None:
    project = ZenMLProject(root=tmp_path, env=zenml_env(tmp_path / "config"))
    project.repo.mkdir()
    zenml_cli = str(Path(sys.executable).parent / "zenml")
    ran = []
    for command in commands():
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


def test_the_python_snippet_runs() -> None:
    (snippet,) = blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    train = namespace["train"]
    settings = train.configuration.settings  # type: ignore[attr-defined]
    assert settings["step_operator:gpu-jobs"].model_dump()["shm_size"] == "16Gi"
    assert settings["resources"].gpu_count == 2
