"""How durations are written for people: one formatter for the log lines and the command line."""

from __future__ import annotations

__all__ = ["duration"]


def duration(seconds: float) -> str:
    """``5s``, ``1m05s``, ``1h02m``: whole seconds, the two largest units."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
