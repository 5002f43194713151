"""``run`` interrupted: the runner cleans up, then the command exits 128 + the signal, as shells do.

Each test runs the command in a child process (signals are process-wide) against the in-memory
API, waits until the Job is submitted, and sends the signal.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def kubeconfig(tmp_path: Path) -> Path:
    # Read for its namespace and server only: the child's operator talks to the fake.
    path = tmp_path / "kubeconfig"
    path.write_text(
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
    return path


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(tmp_path: Path, signum: int, *extra: str) -> tuple[int, str, str]:
    argv = ["run", "-n", "ml", "--image", "img:1", "--run-id", "r1", *extra, "--", "train"]
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.cli_child", *argv],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig(tmp_path))},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a job a non-interactive shell put in the background inherits
        # SIGINT ignored, and the command line keeps a signal ignored that it was started with.
        preexec_fn=_default_sigint,
    )
    assert child.stderr is not None and child.stdout is not None
    seen = []
    with selectors.DefaultSelector() as sel:
        sel.register(child.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = child.stderr.readline()
            seen.append(line)
            if "submitted Job" in line or not line:
                break
    assert any("submitted Job" in line for line in seen), seen
    time.sleep(0.5)  # into the runner's wait
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    return child.returncode, out, "".join(seen) + err


@pytest.mark.parametrize(
    ("signum", "code", "last"),
    [
        (signal.SIGHUP, 129, "k8s-step-operator run: terminated by SIGHUP"),
        (signal.SIGTERM, 143, "k8s-step-operator run: terminated by SIGTERM"),
        (signal.SIGINT, 130, "k8s-step-operator run: interrupted (Ctrl-C)"),
    ],
)
def test_signal_deletes_the_job_and_exits_like_a_shell(
    tmp_path: Path, signum: int, code: int, last: str
) -> None:
    returncode, out, err = interrupted(tmp_path, signum)
    assert returncode == code, err
    assert "JOBS LEFT 0" in out
    assert "deleting Job ml/" in err
    assert err.strip().splitlines()[-1] == last
    assert "Traceback" not in err


def test_detach_leaves_the_job_running(tmp_path: Path) -> None:
    returncode, out, err = interrupted(tmp_path, signal.SIGHUP, "--on-sigterm", "detach")
    assert returncode == 129, err
    assert "JOBS LEFT 1" in out
    assert "--run-id r1 to reattach" in err.strip().splitlines()[-1]
