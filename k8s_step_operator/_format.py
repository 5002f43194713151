"""How the package writes a length of time for a person: one format, on the console and in logs.

It imports nothing of ours, so that every layer (the runner's log lines, the command line's
status line) may use it.
"""

from __future__ import annotations

__all__ = ["duration"]


def duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``1m05s`` or ``1h02m03s``: whole seconds, rounded down."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
