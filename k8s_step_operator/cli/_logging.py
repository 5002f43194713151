"""What ``run`` shows while it follows a step: the operator's lines, the status line, the output.

Two sources, each read for what it is. The operator's log records become the console's lines
(problems always; phases unless ``--quiet``; the runner's inner lines and the retried calls only
with ``--verbose``, told apart by their logger and the record's ``k8sso_retry`` mark). The
step's events drive the status line (``Submitted``, ``PhaseChanged``, ``Heartbeat``), the
"API server not answering" note (``Retrying``) and stdout (``LogLine``): nothing here reads a
record's text to learn where the step is.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import IO

from k8s_step_operator._runner.diagnosis import Phase
from k8s_step_operator._runner.events import (
    Event,
    Heartbeat,
    LogLine,
    PhaseChanged,
    Retrying,
    Submitted,
)
from k8s_step_operator.cli._console import Console

_OPERATOR_LOGGER = "k8s_step_operator"
_STEP_LOGGER = "k8s_step_operator.step"


class _OperatorLines(logging.Handler):
    """The operator's records on the console: phase lines, heartbeats and problems."""

    def __init__(self, console: Console, *, verbose: bool, quiet: bool) -> None:
        super().__init__(logging.DEBUG if verbose else logging.INFO)
        self.console = console
        self.verbose = verbose
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if getattr(record, "k8sso_retry", False) and not self.verbose:
                return  # the status line says it (a Retrying event), once, not line by line
            # Below warnings: nothing with --quiet; the runner's modules' lines (re-lists, log
            # streams) only with --verbose.
            below = record.levelno < logging.WARNING
            if below and (self.quiet or (record.name != _OPERATOR_LOGGER and not self.verbose)):
                return
            message = record.getMessage()
            if self.verbose and record.exc_info:
                message += "\n" + self.format(record).split("\n", 1)[-1]
            self.console.line(message)
        except Exception:
            self.handleError(record)


class _EventView:
    """The step's events on the console: the status line, retries, and its output on stdout."""

    def __init__(self, console: Console, out: IO[str], *, verbose: bool, quiet: bool) -> None:
        self.console = console
        self.out = out
        self.verbose = verbose
        self.quiet = quiet

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            line = f"{event.prefix}{event.text}\n"

            def write() -> None:
                self.out.write(line)
                self.out.flush()

            self.console.around(write)
            return
        if self.quiet:
            return
        if isinstance(event, Submitted):
            verb = "reattached to existing Job" if event.reattached else "submitted Job"
            self.console.set_status(f"step {event.step}: {verb} {event.where}")
        elif isinstance(event, (PhaseChanged, Heartbeat)):
            if event.phase is Phase.SUCCEEDED:
                return  # the command's own last line says it
            self.console.set_status(
                f"step {event.step}: {event.phase.value}", event.summary, lasted=event.elapsed
            )
        elif isinstance(event, Retrying) and not self.verbose:
            self.console.trouble(event.text)


@contextlib.contextmanager
def _console_logging(console: Console, *, verbose: bool, quiet: bool) -> Iterator[_EventView]:
    """Route the operator's loggers to the console for the block, then restore them.

    Yields the subscriber that shows the step's events: subscribe it to the operator.
    """
    operator_log = logging.getLogger(_OPERATOR_LOGGER)
    step_log = logging.getLogger(_STEP_LOGGER)
    saved = (operator_log.level, step_log.level, step_log.propagate)
    lines = _OperatorLines(console, verbose=verbose, quiet=quiet)
    lines.setFormatter(logging.Formatter("%(message)s"))
    # The step's output reaches stdout through its events; its logger stays quiet here.
    silent = logging.NullHandler()
    operator_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    operator_log.addHandler(lines)
    step_log.addHandler(silent)
    step_log.propagate = False
    ticker_stop = threading.Event()
    ticker: threading.Thread | None = None
    if console.tty and not quiet:

        def tick() -> None:
            while not ticker_stop.wait(1.0):
                console.tick()

        ticker = threading.Thread(target=tick, name="status-line", daemon=True)
        ticker.start()
    try:
        yield _EventView(console, sys.stdout, verbose=verbose, quiet=quiet)
    finally:
        ticker_stop.set()
        if ticker is not None:
            ticker.join(2.0)
        console.close()
        operator_log.removeHandler(lines)
        step_log.removeHandler(silent)
        operator_log.setLevel(saved[0])
        step_log.setLevel(saved[1])
        step_log.propagate = saved[2]
