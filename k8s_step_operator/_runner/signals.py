"""The one place that turns SIGTERM and SIGHUP into an exception, for ``launch`` and the CLI.

A step's Job must not outlive a caller that is told to go: the caller's main thread gets a
``Terminated`` exception (like Ctrl-C's ``KeyboardInterrupt``), deletes the Job, and then the
signal is delivered again to whatever handled it before. While the Job is deleted, further
interrupts are ignored so the clean-up completes.

Handlers can only be installed from the main thread; elsewhere these blocks change nothing and
the caller's own handling applies. Blocks nest: an inner block (``launch`` inside the CLI's
``run``) leaves the outer one's handler in place and shares its flag.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["TERMINATING", "Terminated", "TerminationFlag", "signals_deferred", "terminations_raise"]

TERMINATING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a step was being followed.

    Attributes:
        signum: The signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TerminationFlag(threading.Event):
    """Set when a terminating signal arrived within the block; ``signum`` says which.

    ``handled`` is False inside a nested block: the outermost block's owner handles the signal
    (an inner one cleans up and lets ``Terminated`` go on).
    """

    signum: int = signal.SIGTERM
    handled: bool = True


_local = threading.local()


@contextlib.contextmanager
def terminations_raise() -> Iterator[TerminationFlag]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread."""
    outer: TerminationFlag | None = getattr(_local, "flag", None)
    if outer is not None:
        inner = TerminationFlag()
        inner.handled = False
        yield inner
        return
    flag = TerminationFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        flag.signum = signum
        flag.set()
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in TERMINATING}
    _local.flag = flag
    try:
        yield flag
    finally:
        _local.flag = None
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore further interrupts while the Job is being deleted, so the clean-up completes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, *TERMINATING)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
