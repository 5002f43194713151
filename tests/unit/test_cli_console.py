"""What ``run`` shows on stderr: lines with the elapsed time, and on a terminal a live status line.

The console is driven with a fake stream that says whether it is a terminal, and a clock that
moves only when told. The status line follows the runner's events; the lines are its records.
The last tests feed it a step followed on the in-memory API, records and events both.
"""

from __future__ import annotations

import io
import logging
import os
import pty
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from k8s_step_operator import LogLine, Phase, PhaseChanged, Problem, Retrying
from k8s_step_operator._runner.event_log import log_event
from k8s_step_operator.cli import Console
from k8s_step_operator.cli._logging import _console_logging

from .test_step_run import make, running, script, terminated

CLEAR = "\r\x1b[K"


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def console(tty: bool, width: int = 200) -> tuple[Console, Stream, Clock]:
    clock = Clock()
    stream = Stream(tty)
    return Console(stream, clock=clock, width=width), stream, clock


def test_not_a_terminal_gets_whole_lines_only() -> None:
    c, stream, clock = console(tty=False)
    c.set_status("step train: scheduling", "waiting for the scheduler")
    clock.t += 2.5
    c.tick()
    c.line("step train: running - running on gpu-0")
    c.around(lambda: None)
    c.trouble("retrying after refused (attempt 2)")
    c.close()
    text = stream.getvalue()
    assert text == "[    2.5s] step train: running - running on gpu-0\n"
    assert "\r" not in text and "\x1b" not in text


def test_terminal_status_line_is_rewritten_in_place() -> None:
    c, stream, clock = console(tty=True)
    c.set_status("step train: scheduling", "waiting for the scheduler")
    assert stream.getvalue() == (
        f"{CLEAR}[    0.0s] step train: scheduling (0s) - waiting for the scheduler"
    )
    clock.t += 3
    c.tick()
    assert stream.getvalue().endswith(
        f"{CLEAR}[    3.0s] step train: scheduling (3s) - waiting for the scheduler"
    )
    stream.seek(0)
    stream.truncate()
    # A line goes above the status line: erase it, write the line, draw it again.
    c.line("step train: running - running on gpu-0")
    assert stream.getvalue() == (
        f"{CLEAR}[    3.0s] step train: running - running on gpu-0\n"
        f"{CLEAR}[    3.0s] step train: scheduling (3s) - waiting for the scheduler"
    )
    stream.seek(0)
    stream.truncate()
    out: list[str] = []
    c.around(lambda: out.append(stream.getvalue()))
    assert out == [CLEAR]  # the status line was gone while the step's line was written
    stream.seek(0)
    stream.truncate()
    c.close()
    assert stream.getvalue() == CLEAR


def test_phase_change_restarts_the_phase_clock() -> None:
    c, stream, clock = console(tty=True)
    c.set_status("step train: scheduling")
    clock.t += 70
    c.set_status("step train: running", "running on gpu-0")
    clock.t += 5
    c.tick()
    assert stream.getvalue().endswith("[   75.0s] step train: running (5s) - running on gpu-0")
    c.set_status("step train: running", "running on gpu-0", lasted=65)
    assert stream.getvalue().endswith("[   75.0s] step train: running (1m05s) - running on gpu-0")


def test_status_line_is_cut_to_the_terminal_width() -> None:
    c, stream, _ = console(tty=True, width=40)
    c.set_status("step train: scheduling", "0/6 nodes are available: 2 Insufficient nvidia.com/gpu")
    drawn = stream.getvalue().split(CLEAR)[-1]
    assert len(drawn) == 39


def test_connection_trouble_is_one_line_only_when_it_lasts() -> None:
    c, stream, clock = console(tty=False)
    for _ in range(5):  # ten seconds of retries at start: nothing
        c.trouble("retrying after create Job: refused (attempt 3)")
        clock.t += 2
    assert stream.getvalue() == ""
    for _ in range(40):  # it goes on: one line after 15 s, then once a minute
        c.trouble("retrying after create Job: refused (attempt 9)")
        clock.t += 2
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "API server not answering for 16s, retrying: retrying after create Job: refused (attempt 9)"
    )
    assert "API server not answering for 1m16s" in lines[1]
    # A quiet spell ends the streak: the next one starts from zero.
    clock.t += 30
    c.trouble("retrying after get Job: refused (attempt 2)")
    assert len(stream.getvalue().splitlines()) == 2


def test_connection_trouble_shows_in_the_status_line_on_a_terminal() -> None:
    c, stream, _ = console(tty=True)
    c.set_status("step train: running", "running on gpu-0")
    c.trouble("retrying after watch: refused (attempt 2)")
    assert stream.getvalue().endswith(
        "step train: running (0s) - running on gpu-0; API server not answering: retrying after "
        "watch: refused (attempt 2)"
    )
    c.set_status("step train: succeeded")
    assert "not answering" not in stream.getvalue().split(CLEAR)[-1]


@pytest.fixture
def routed(request: pytest.FixtureRequest) -> Iterator[tuple[Console, Stream, Clock, Any]]:
    verbose, quiet = request.param
    c, stream, clock = console(tty=False)
    with _console_logging(c, verbose=verbose, quiet=quiet) as view:
        yield c, stream, clock, view


operator = logging.getLogger("k8s_step_operator")
client = logging.getLogger("k8s_step_operator._kube.client")
watcher = logging.getLogger("k8s_step_operator._runner.watcher")
AT = datetime(2026, 1, 1, tzinfo=UTC)
IDS: dict[str, Any] = {"at": AT, "step": "train", "job": "j", "namespace": "ml"}


def emit_all(view: Any) -> None:
    """What the runner and the API layer say about one step, as records and events."""
    waiting = PhaseChanged(
        **IDS, phase=Phase.SCHEDULING, previous=None, summary="waiting for the scheduler"
    )
    log_event(waiting)
    view(waiting)
    client.warning(
        "retrying after %s (attempt %d)", "create Job: refused", 2, extra={"k8sso_retry": True}
    )
    view(Retrying(at=AT, operation="create Job ml/j", error="refused", delay=0.4, attempt=2))
    watcher.info("watch of %s in %s expired (410); re-listing", "pods", "ml")
    watcher.warning(
        "watch of %s in %s failed (%s); retrying in %.1fs",
        "pods",
        "ml",
        "x",
        0.4,
        extra={"k8sso_retry": True},
    )
    stuck = PhaseChanged(
        **IDS,
        phase=Phase.SCHEDULING,
        previous=Phase.SCHEDULING,
        summary="unschedulable: 0/6 nodes",
        problem=Problem.UNSCHEDULABLE,
    )
    log_event(stuck)
    view(stuck)
    operator.debug("cannot list nodes for the fit check: %s", "refused")


@pytest.mark.parametrize("routed", [(False, False)], indirect=True)
def test_default_shows_phases_and_problems_not_retries(routed: Any) -> None:
    c, stream, _, view = routed
    emit_all(view)
    assert stream.getvalue().splitlines() == [
        "[    0.0s] step train: scheduling - waiting for the scheduler",
        "[    0.0s] step train: scheduling - unschedulable: 0/6 nodes",
    ]
    assert (c.status, c.detail) == ("step train: scheduling", "unschedulable: 0/6 nodes")


@pytest.mark.parametrize("routed", [(True, False)], indirect=True)
def test_verbose_shows_everything(routed: Any) -> None:
    _, stream, _, view = routed
    emit_all(view)
    text = stream.getvalue()
    assert "retrying after create Job: refused (attempt 2)" in text
    assert "expired (410)" in text and "retrying in 0.4s" in text
    assert "cannot list nodes for the fit check" in text


@pytest.mark.parametrize("routed", [(False, True)], indirect=True)
def test_quiet_shows_problems_only(routed: Any) -> None:
    c, stream, _, view = routed
    emit_all(view)
    assert stream.getvalue().splitlines() == [
        "[    0.0s] step train: scheduling - unschedulable: 0/6 nodes"
    ]
    assert c.status == ""


def test_logging_is_restored_after_run() -> None:
    step = logging.getLogger("k8s_step_operator.step")
    before = (list(operator.handlers), operator.level, list(step.handlers), step.propagate)
    c, _, _ = console(tty=False)
    with _console_logging(c, verbose=True, quiet=False):
        assert operator.level == logging.DEBUG and not step.propagate
    assert (list(operator.handlers), operator.level, list(step.handlers), step.propagate) == before


def test_the_runners_own_lines() -> None:
    # A step followed from submission to its end on the in-memory API, shown by the console:
    # every phase line, and a heartbeat during a long wait.
    kube, run = make(pending_timeout=600)
    script(
        kube,
        (1, lambda j: kube.set_pod(j)),
        (90, lambda j: running(kube, j)),
        (95, lambda j: terminated(kube, j, 0, "Completed")),
        (95, lambda j: kube.set_job_condition(j, "Complete")),
    )
    stream = Stream(tty=False)
    c = Console(stream, clock=kube.clock.monotonic)
    with _console_logging(c, verbose=False, quiet=False) as view:
        run.events.subscribe(view)
        run.run()
        status = (c.status, c.detail)
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines[0].startswith("step train: submitted Job ml/")
    assert "step train: scheduling - waiting for the scheduler" in lines
    heartbeat = next(line for line in lines if "still" in line)
    assert heartbeat.startswith("step train: still scheduling after 1m0")
    assert "; pending_timeout 600s - " in heartbeat
    assert "step train: running - running on gpu-0" in lines
    assert lines[-1].startswith("step train: succeeded")
    assert status[0] == "step train: running"


def test_the_steps_output_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    c, stream, _ = console(tty=True)
    with _console_logging(c, verbose=False, quiet=True) as view:
        c.set_status("step train: running")  # as if not quiet: the line must make way
        line = LogLine(**IDS, pod="p", container="step", text="epoch 1")
        log_event(line)  # the library's logger stays quiet: stdout has the line once
        view(line)
    assert capsys.readouterr().out == "epoch 1\n"
    assert "epoch" not in stream.getvalue()
    assert stream.getvalue().endswith(f"{CLEAR}")  # closed: nothing left on the line


def test_a_terminal_of_unknown_size_gets_a_whole_status_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pseudo-terminal nobody sized reports 0 columns: the status line is not cut to nothing.
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as stream:
            assert stream.isatty() and os.get_terminal_size(slave).columns == 0
            c = Console(stream, clock=Clock())
            assert c.tty
            assert c._columns() >= 80
    finally:
        os.close(master)
        os.close(slave)
