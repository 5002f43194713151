"""``k8s-step-operator`` on the local cluster: phases, output, exit status, one-line errors, the
namespace from the context or ``-n``, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

import k8s_step_operator

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


def scoped_kubeconfig(kubeconfig: Path, tmp_path: Path, namespace: str) -> Path:
    """The same cluster, with ``namespace`` as the current context's namespace."""
    config = yaml.safe_load(kubeconfig.read_text())
    for ctx in config["contexts"]:
        if ctx["name"] == config["current-context"]:
            ctx["context"]["namespace"] = namespace
    path = tmp_path / "scoped-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_version(kubeconfig_path: Path) -> None:
    done = cli("--version", kubeconfig=kubeconfig_path)
    assert (done.returncode, done.stdout) == (
        0,
        f"k8s-step-operator {k8s_step_operator.__version__}\n",
    )


def test_missing_kubeconfig_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "k8s_step_operator.cli", "run", "--image", "x:1", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("k8s-step-operator run: error: kubeconfig_path: expected a kubeconfig")
    assert line.endswith("(set --kubeconfig or KUBECONFIG)")


def test_unreachable_server_is_one_line_within_seconds(tmp_path: Path) -> None:
    # Port 1 refuses at once: the operator gives up after its start-up retry budget (about 10 s;
    # the last back-off may add up to 5 s) and says so in one line.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    started = time.monotonic()
    done = cli("run", "-n", "ml", "--image", "x:1", "--", "true", kubeconfig=kubeconfig)
    took = time.monotonic() - started
    assert done.returncode == 125, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "k8s-step-operator run: error: cannot reach the API server https://127.0.0.1:1: "
        "Connection refused (create Job ml/"
    )
    assert took < 20, took


def test_namespace_from_the_context_or_the_flag(
    kubeconfig_path: Path, namespace: str, tmp_path: Path, api_client: Any
) -> None:
    scoped = scoped_kubeconfig(kubeconfig_path, tmp_path, namespace)
    sim = settings_file(tmp_path, **{"sim.k8s-step-operator.io/run-duration": "200ms"})
    argv = ("--image", "localhost/step:1", "--settings", sim, "--", "true")
    done = cli("run", "--run-id", "ctx", *argv, kubeconfig=scoped)
    assert done.returncode == 0, done.stderr
    assert f"submitted Job {namespace}/" in done.stderr
    other = f"{namespace[:50]}-flag"
    k8s.CoreV1Api(api_client).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other))
    )
    try:
        done = cli("run", "-n", other, "--run-id", "flag", *argv, kubeconfig=scoped)
        assert done.returncode == 0, done.stderr
        assert f"submitted Job {other}/" in done.stderr
    finally:
        k8s.CoreV1Api(api_client).delete_namespace(other)
    # render reads the same context, and sends nothing.
    done = cli("render", "-o", "json", "--image", "x:1", "--", "true", kubeconfig=scoped)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metadata"]["namespace"] == namespace


def test_deadline_exits_124_and_no_fit_exits_125(
    kubeconfig_path: Path, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "deadline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "active_deadline_seconds": 2,
                "pod_annotations": {"sim.k8s-step-operator.io/run-duration": "60s"},
            }
        )
    )
    base = ("run", "-n", namespace, "--image", "localhost/step:1", "--settings", str(path))
    done = cli(*base, "--", "sleep", "60", kubeconfig=kubeconfig_path)
    assert done.returncode == 124, done.stderr
    assert done.stderr.splitlines()[-1].startswith(
        "k8s-step-operator run: error: step exceeded its deadline"
    )
    done = cli(*base, "--run-id", "big", "--gpus", "64", "--", "true", kubeconfig=kubeconfig_path)
    assert done.returncode == 125, done.stderr
    assert "no node could ever fit this pod" in done.stderr.splitlines()[-1]


def test_sighup_deletes_the_job_and_exits_129(
    kubeconfig_path: Path, namespace: str, tmp_path: Path, api_client: Any
) -> None:
    sim = settings_file(tmp_path, **{"sim.k8s-step-operator.io/run-duration": "10m"})
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "k8s_step_operator.cli",
            "run",
            "-n",
            namespace,
            "--image",
            "localhost/step:1",
            "--settings",
            sim,
            "--",
            "sleep",
            "600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"KUBECONFIG": str(kubeconfig_path), "PATH": "/usr/bin:/bin"},
    )
    assert child.stderr is not None
    seen = []
    for line in child.stderr:
        seen.append(line)
        if "running - " in line:
            break
    assert any("running - " in line for line in seen), seen
    child.send_signal(signal.SIGHUP)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 129, "".join(seen) + err
    assert err.strip().splitlines()[-1] == "k8s-step-operator run: terminated by SIGHUP"
    assert "deleted; no pod of it is left" in err
    jobs = k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert [j.metadata.name for j in jobs if not j.metadata.deletion_timestamp] == []
