"""The entrypoint module as a real process: exit codes, stdout, stderr."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from k8s_step_operator import StepOperatorEntrypointConfiguration

ROOT = Path(__file__).parents[2]

STEPS = """
import sys

def ok():
    print("hello from the step")

def boom():
    print("about to fail")
    raise RuntimeError("the step broke")

def seven():
    sys.exit(7)
"""


def _run(tmp_path: Path, step: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_steps.py").write_text(STEPS, encoding="utf-8")
    command = StepOperatorEntrypointConfiguration.get_entrypoint_command()
    args = StepOperatorEntrypointConfiguration.get_entrypoint_arguments(
        step_name="s", step_source=step, step_run_id="run-1"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run(
        [sys.executable, *command[1:], *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_step_output_goes_to_stdout(tmp_path: Path) -> None:
    result = _run(tmp_path, "my_steps:ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the step\n"
    assert "running step s" in result.stderr


def test_failing_step_exits_non_zero_with_traceback(tmp_path: Path) -> None:
    result = _run(tmp_path, "my_steps:boom")
    assert result.returncode == 1
    assert "about to fail" in result.stdout
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: the step broke" in result.stderr


def test_step_exit_code_is_kept(tmp_path: Path) -> None:
    assert _run(tmp_path, "my_steps:seven").returncode == 7


@pytest.mark.parametrize("source", ["my_steps:missing", "no_such_module_xyz:f"])
def test_unknown_step_is_a_usage_error(tmp_path: Path, source: str) -> None:
    result = _run(tmp_path, source)
    assert result.returncode == 2
    assert "--step_source" in result.stderr


def test_unknown_configuration_class(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "k8s_step_operator.entrypoint",
            "--entrypoint_config_source",
            "k8s_step_operator._errors.ConfigurationError",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "BaseEntrypointConfiguration" in result.stderr
