"""The operator's and the step's log records, routed to the console while ``run`` follows a step.

The runner says what happens through its loggers; these handlers turn its records into the
console's lines and its status line (the phase and heartbeat records by their formats), and
write the step's own output to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import IO

from k8s_step_operator.cli._console import Console

# Log records that say a call is being retried: collapsed unless --verbose.
_RETRY_RECORDS = (
    ("k8s_step_operator._kube.client", "retrying after"),
    ("k8s_step_operator._runner.watcher", "watch of %s in %s failed"),
)
# The runner's phase line and heartbeat (k8s_step_operator._runner.step_run): the status line
# takes the step, its phase and the summary from their arguments.
_PHASE_FORMAT = "step %s: %s - %s"
_HEARTBEAT_FORMAT = "step %s: still %s after %s%s - %s"
_OPERATOR_LOGGER = "k8s_step_operator"
_STEP_LOGGER = "k8s_step_operator.step"


def _is_retry(record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    return any(record.name == name and msg.startswith(head) for name, head in _RETRY_RECORDS)


class _OperatorLines(logging.Handler):
    """The operator's records on the console: phase lines, heartbeats, problems, the status."""

    def __init__(self, console: Console, *, verbose: bool, quiet: bool) -> None:
        super().__init__(logging.DEBUG if verbose else logging.INFO)
        self.console = console
        self.verbose = verbose
        self.quiet = quiet

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if _is_retry(record) and not self.verbose:
                if not self.quiet:
                    self.console.trouble(message)
                return
            self._follow_phase(record, message)
            # Below warnings: nothing with --quiet; the runner's modules' lines (re-lists, log
            # streams) only with --verbose.
            below = record.levelno < logging.WARNING
            if below and (self.quiet or (record.name != _OPERATOR_LOGGER and not self.verbose)):
                return
            if self.verbose and record.exc_info:
                message += "\n" + self.format(record).split("\n", 1)[-1]
            self.console.line(message)
        except Exception:
            self.handleError(record)

    def _follow_phase(self, record: logging.LogRecord, message: str) -> None:
        """Keep the status line on the step's current phase."""
        if self.quiet:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        lasted = getattr(record, "k8sso_elapsed", None)
        if record.msg == _PHASE_FORMAT and len(args) == 3:
            step, phase, summary = args
            self.console.set_status(f"step {step}: {phase}", str(summary), lasted=lasted or 0.0)
        elif record.msg == _HEARTBEAT_FORMAT and len(args) == 5:
            step, phase, _, _, summary = args
            self.console.set_status(f"step {step}: {phase}", str(summary), lasted=lasted or 0.0)
        elif record.name == _OPERATOR_LOGGER and str(record.msg).startswith("step %s: submitted"):
            self.console.set_status(message)


class _StepLines(logging.Handler):
    """Writes the step's own output to stdout, as it prints it."""

    def __init__(self, console: Console, stream: IO[str]) -> None:
        super().__init__(logging.DEBUG)
        self.console = console
        self.out = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()

            def write() -> None:
                self.out.write(message + "\n")
                self.out.flush()

            self.console.around(write)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _console_logging(console: Console, *, verbose: bool, quiet: bool) -> Iterator[None]:
    """Route the operator's loggers to the console for the block, then restore them."""
    operator_log = logging.getLogger(_OPERATOR_LOGGER)
    step_log = logging.getLogger(_STEP_LOGGER)
    saved = (operator_log.level, step_log.level, step_log.propagate)
    lines = _OperatorLines(console, verbose=verbose, quiet=quiet)
    lines.setFormatter(logging.Formatter("%(message)s"))
    output = _StepLines(console, sys.stdout)
    operator_log.setLevel(logging.DEBUG if verbose else logging.INFO)
    operator_log.addHandler(lines)
    step_log.setLevel(logging.INFO)
    step_log.addHandler(output)
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
        yield
    finally:
        ticker_stop.set()
        if ticker is not None:
            ticker.join(2.0)
        console.close()
        operator_log.removeHandler(lines)
        step_log.removeHandler(output)
        operator_log.setLevel(saved[0])
        step_log.setLevel(saved[1])
        step_log.propagate = saved[2]
