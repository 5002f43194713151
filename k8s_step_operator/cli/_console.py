"""What ``run`` shows a person on stderr: lines with the elapsed time, and a live status line."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import IO

from k8s_step_operator._format import duration
from k8s_step_operator.cli._outcome import _first_line

__all__ = ["Console"]

_CLEAR = "\r\x1b[K"


class Console:
    """stderr for a person: lines with the elapsed time and, on a terminal, a live status line.

    On a terminal, one status line (the current phase and how long it has lasted) is rewritten
    in place every second; lines of the operator and of the step are written above it. When
    stderr is not a terminal, no control character is ever written and the status line is not
    shown: only whole lines.

    Args:
        stream: Where the lines go (stderr).
        tty: Whether ``stream`` is a terminal; ``None`` asks it.
        clock: Monotonic seconds.
        width: Columns of the terminal; ``None`` asks it (the status line is cut to fit, since a
            wrapped line cannot be rewritten in place).
    """

    # Connection trouble is said as a line only when it lasts, and then once a minute.
    TROUBLE_SHOWN_AFTER = 15.0
    TROUBLE_REPEAT = 60.0
    TROUBLE_GAP = 10.0

    def __init__(
        self,
        stream: IO[str],
        *,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.width = width
        self.start = clock()
        self.status = ""
        self.detail = ""
        self.status_since = self.start
        self._shown = False
        self._lock = threading.RLock()
        self._trouble_since: float | None = None
        self._trouble_last = 0.0
        self._trouble_said: float | None = None
        self._trouble = ""

    def _prefix(self) -> str:
        return f"[{self.clock() - self.start:7.1f}s]"

    def _columns(self) -> int:
        if self.width:
            return self.width
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        # A terminal that does not know its size says 0 (a pseudo-terminal nobody sized).
        return columns if columns > 0 else shutil.get_terminal_size((100, 24)).columns

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR)
            self._shown = False

    def _draw(self) -> None:
        if not self.tty or not self.status:
            return
        now = self.clock()
        text = f"{self._prefix()} {self.status} ({duration(now - self.status_since)})"
        if self.detail:
            text += f" - {self.detail}"
        if self._trouble and self._trouble_since is not None:
            text += f"; API server not answering: {self._trouble}"
        self.stream.write(_CLEAR + text[: max(self._columns() - 1, 10)])
        self.stream.flush()
        self._shown = True

    def line(self, text: str) -> None:
        """A line with the elapsed time, above the status line."""
        with self._lock:
            self._erase()
            self.stream.write(f"{self._prefix()} {text}\n")
            self._draw()
            self.stream.flush()

    def around(self, write: Callable[[], None]) -> None:
        """Run ``write`` (a line on stdout) with the status line out of its way."""
        with self._lock:
            if self._shown:
                self._erase()
                self.stream.flush()
            write()
            self._draw()

    def set_status(self, text: str, detail: str = "", *, lasted: float = 0.0) -> None:
        """Show ``text (how long) - detail`` as the status, having lasted ``lasted`` already."""
        with self._lock:
            self.status = _first_line(text)
            self.detail = _first_line(detail)
            self.status_since = self.clock() - lasted
            self._trouble = ""
            self._trouble_since = None
            self._draw()

    def tick(self) -> None:
        """Redraw the status line (its time has moved on)."""
        with self._lock:
            self._draw()

    def trouble(self, text: str) -> None:
        """The API server did not answer and the call is retried: said once it lasts."""
        with self._lock:
            now = self.clock()
            if self._trouble_since is None or now - self._trouble_last > self.TROUBLE_GAP:
                self._trouble_since, self._trouble_said = now, None
            self._trouble_last = now
            self._trouble = text
            lasted = now - self._trouble_since
            due = self._trouble_said is None or now - self._trouble_said >= self.TROUBLE_REPEAT
            if lasted >= self.TROUBLE_SHOWN_AFTER and due:
                self._trouble_said = now
                self.line(f"API server not answering for {duration(lasted)}, retrying: {text}")
            else:
                self._draw()

    def close(self) -> None:
        """Remove the status line; what follows starts on a clean line."""
        with self._lock:
            self._erase()
            self.stream.flush()
