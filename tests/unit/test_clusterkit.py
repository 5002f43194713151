"""The local cluster's process helpers (``e2e/clusterkit.py``) on real processes of this machine.

A component is started through a shell and ``setsid``; whoever looks at it right after its start
must see it running, never a blank that reads as "exited" (the cause of a start reported as failed
while the service came up).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

E2E = Path(__file__).resolve().parents[2] / "e2e"


@pytest.fixture(scope="module")
def kit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8sso_e2e_clusterkit", E2E / "clusterkit.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def started() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_process_read_right_after_its_start_is_never_blank(
    kit: ModuleType, tmp_path: Path, started: list[int]
) -> None:
    sleep = "/bin/sleep" if Path("/bin/sleep").exists() else "/usr/bin/sleep"
    seen = []
    for i in range(100):
        pid = kit.spawn(
            [sleep, "300"],
            logfile=tmp_path / "log",
            pidfile=tmp_path / f"{i}.pid",
            cwd=tmp_path,
        )
        started.append(pid)
        seen.append(kit.proc_cmdline(pid)[:1])
    assert all(cmd and Path(cmd[0]).name in ("sh", "setsid", "sleep") for cmd in seen), seen
    assert all(kit.proc_alive(pid) for pid in started)


def test_a_zombie_has_no_command_line_at_once(kit: ModuleType) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while kit.proc_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not kit.proc_alive(child.pid)  # exited, not yet reaped
        t0 = time.monotonic()
        assert kit.proc_cmdline(child.pid) == []
        assert time.monotonic() - t0 < kit.EXEC_WINDOW_S / 2
    finally:
        child.wait()
    assert kit.proc_cmdline(child.pid) == []
