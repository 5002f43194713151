"""How the package writes a length of time and an amount for a person, on the console and in logs.

One format each: durations (``1m05s``), sizes in bytes as users write them (``64GiB``,
``23.4GiB``, ``500MB``), and other amounts as plain numbers (``8``, ``0.5``), never in the
floating-point exponent form a scheduler's arithmetic would print (``6.87195e+10``). It imports
nothing of ours, so that every layer (the runner's log lines, the command line's status line,
the builder's errors) may use it.
"""

from __future__ import annotations

import math
from decimal import Decimal

__all__ = ["amount", "duration", "is_bytes", "number", "size"]


def duration(seconds: float) -> str:
    """``seconds`` as ``42s``, ``1m05s`` or ``1h02m03s``: whole seconds, rounded down."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


_BINARY = tuple((f"{p}iB", 1 << (10 * n)) for n, p in reversed(tuple(enumerate("KMGTPE", 1))))
_DECIMAL = tuple((f"{p}B", 10 ** (3 * n)) for n, p in reversed(tuple(enumerate("KMGTPE", 1))))


def _one_decimal(value: float, up: bool) -> str:
    tenths = math.ceil(value * 10 - 1e-9) if up else math.floor(value * 10 + 1e-9)
    whole, tenth = divmod(tenths, 10)
    return f"{whole}" if tenth == 0 else f"{whole}.{tenth}"


def size(n: float | Decimal, *, up: bool = False) -> str:
    """A number of bytes as users write it: ``64GiB``, ``500MB``, ``23.4GiB``, ``512B``.

    Written in the largest binary unit it reaches when it is a whole number of it, else in the
    largest decimal unit when a whole number of that; anything else in the largest binary unit
    with one decimal, rounded down (so that "at most 23.4GiB" holds), or up when ``up`` (so that
    "needs 1.6GiB" does).
    """
    value = Decimal(repr(n)) if isinstance(n, float) else Decimal(n)
    for table in (_BINARY, _DECIMAL):
        for unit, factor in table:
            if value >= factor:
                if value % factor == 0:
                    return f"{value // factor:f}{unit}"
                break
    for unit, factor in _BINARY:
        if value >= factor:
            return f"{_one_decimal(float(value / factor), up)}{unit}"
    return f"{_one_decimal(float(value), up)}B"


def number(value: float | Decimal) -> str:
    """A count or a number of cores: ``8``, ``0.5``, ``1000000``, at most three decimals."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    text = f"{exact.quantize(Decimal('0.001')):f}" if exact != exact.to_integral_value() else ""
    return text.rstrip("0").rstrip(".") if text else f"{exact.to_integral_value():f}"


def is_bytes(resource: str) -> bool:
    """Whether a Kubernetes resource is counted in bytes (memory, storage, huge pages)."""
    return resource in ("memory", "ephemeral-storage", "storage") or resource.startswith(
        "hugepages-"
    )


def amount(resource: str, value: float | Decimal, *, up: bool = False) -> str:
    """An amount of ``resource`` for a person: a size for bytes, else a plain number."""
    return size(value, up=up) if is_bytes(resource) else number(value)
