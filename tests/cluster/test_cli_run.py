"""``k8s-step-operator run`` on the local cluster: phases, output, exit status, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster


def cli(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8s_step_operator.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def settings_file(tmp_path: Path, **annotations: str) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"pod_annotations": annotations}))
    return str(path)


def test_run_exits_with_the_steps_exit_code(
    kubeconfig_path: Path, namespace: str, gpu_pool: object, tmp_path: Path
) -> None:
    sim = settings_file(
        tmp_path,
        **{
            "sim.k8s-step-operator.io/run-duration": "1s",
            "sim.k8s-step-operator.io/exit-code": "3",
        },
    )
    product = gpu_pool.node_selector["nvidia.com/gpu.product"]  # type: ignore[attr-defined]
    done = cli(
        "run",
        "--namespace",
        namespace,
        "--gpus",
        "2",
        "--gpu-type",
        product,
        "--image",
        "localhost/step:1",
        "--settings",
        sim,
        "--",
        "python",
        "train.py",
        kubeconfig=kubeconfig_path,
    )
    assert done.returncode == 3, done.stderr
    assert "submitted Job" in done.stderr and "s] step step:" in done.stderr
    assert "exit code 3" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


def test_run_success_prints_the_steps_output(
    kubeconfig_path: Path, namespace: str, tmp_path: Path
) -> None:
    sim = settings_file(tmp_path, **{"sim.k8s-step-operator.io/run-duration": "500ms"})
    done = cli(
        "run",
        "--namespace",
        namespace,
        "--image",
        "localhost/step:1",
        "--settings",
        sim,
        "--",
        "true",
        kubeconfig=kubeconfig_path,
    )
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stderr
    assert done.stdout.strip(), "the step's output did not reach stdout"


def test_run_bad_input_is_one_line(kubeconfig_path: Path, namespace: str) -> None:
    done = cli(
        "run",
        "--namespace",
        namespace,
        "--gpus",
        "-1",
        "--image",
        "x:1",
        "--",
        "true",
        kubeconfig=kubeconfig_path,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "gpu_count" in done.stderr
