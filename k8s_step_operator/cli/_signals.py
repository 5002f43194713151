"""SIGTERM and SIGHUP, made to end ``run`` as Ctrl-C does: by an exception in the main thread."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class _Terminated(BaseException):
    """SIGTERM or SIGHUP reached the command: it exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _terminations_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``_Terminated`` in the main thread, as Ctrl-C raises its own.

    While a step is followed, the runner's own handlers take over (they delete the Job, or leave
    it with ``on_sigterm: detach``) and then deliver the signal again, to these.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in _TERMINATING}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
