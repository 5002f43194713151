"""Sizes in bytes as people write them: Kubernetes' spelling (``16Gi``) and ZenML's (``16GiB``).

A user who copies ``memory="16GiB"`` from ZenML into ``shm_size``, or ``16Gi`` from a pod spec
into ``--memory``, means the same size either way; refusing one spelling where the other is
accepted only teaches them which file they are in. So every size the package reads
(``ResourceSettings.memory``, ``shm_size``, the command line's ``--memory``, the byte sizes in
the overrides) goes through ``check_size``, which accepts both, and every refusal says the same
sentence, ``SIZE_FORMS``. The Kubernetes quantity a size becomes keeps the user's number and
unit (``16GiB`` -> ``16Gi``, ``16GB`` -> ``16G``), so a rendered Job reads as it was written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from k8s_step_operator._errors import ConfigurationError

__all__ = ["MAX_SIZE_BYTES", "SIZE_FORMS", "Size", "check_size", "parse_size"]

# The Kubernetes suffix of each unit, and its value in bytes.
_UNITS: dict[str, tuple[str, int]] = {
    "": ("", 1),
    "B": ("", 1),
    **{f"{p}i": (f"{p}i", 1 << (10 * n)) for n, p in enumerate("KMGTPE", 1)},
    **{f"{p}iB": (f"{p}i", 1 << (10 * n)) for n, p in enumerate("KMGTPE", 1)},
    **{p: ("k" if p == "K" else p, 10 ** (3 * n)) for n, p in enumerate("KMGTPE", 1)},
    **{f"{p}B": ("k" if p == "K" else p, 10 ** (3 * n)) for n, p in enumerate("KMGTPE", 1)},
    "k": ("k", 1000),
    "kB": ("k", 1000),
}
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[A-Za-z]*)")

# The API's quantities of bytes are int64.
MAX_SIZE_BYTES = 2**63 - 1

SIZE_FORMS = (
    "a size such as '16Gi', '16GiB', '512M' or '512MB': a number (fractions allowed), then Ki, "
    "Mi, Gi, Ti, Pi, Ei (or KiB ... EiB: powers of 1024), k, M, G, T, P, E (or KB ... EB: "
    "powers of 1000), or B or nothing for bytes"
)


@dataclass(frozen=True)
class Size:
    """A size as written, in bytes, and as a Kubernetes quantity.

    Attributes:
        text: What the user wrote (``16GiB``).
        bytes: Its value in bytes.
        quantity: The Kubernetes quantity with the same number and unit (``16Gi``).
    """

    text: str
    bytes: int
    quantity: str


def parse_size(value: object) -> Size:
    """Read a size in either spelling (see ``SIZE_FORMS``).

    Raises:
        ValueError: If ``value`` is not such a size (the message is ``SIZE_FORMS``), or not a
            whole number of bytes.
    """
    if not isinstance(value, str):
        raise ValueError(SIZE_FORMS)
    match = _SIZE.fullmatch(value)
    if match is None or match["unit"] not in _UNITS:
        raise ValueError(SIZE_FORMS)
    suffix, factor = _UNITS[match["unit"]]
    try:
        exact = Decimal(match["number"]) * factor
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(SIZE_FORMS) from exc
    if exact != exact.to_integral_value():
        raise ValueError(f"{value} is {exact.normalize():f} bytes, not a whole number of bytes")
    return Size(value, int(exact), match["number"] + suffix)


def check_size(field: str, value: object, *, positive: bool = True) -> Size:
    """A size a user wrote, or a ``ConfigurationError`` naming ``field`` that says the forms.

    Args:
        field: The field as errors name it (``settings.shm_size``, ``--memory``).
        value: What the user wrote.
        positive: Refuse zero.

    Raises:
        ConfigurationError: If ``value`` is not a size, is zero (when ``positive``), or is
            8EiB or more.
    """
    try:
        size = parse_size(value)
    except ValueError as exc:
        detail = "" if str(exc) == SIZE_FORMS else str(exc)
        raise ConfigurationError(field, SIZE_FORMS, value, detail=detail) from None
    if (positive and size.bytes <= 0) or size.bytes > MAX_SIZE_BYTES:
        low = "above 0 and " if positive else ""
        raise ConfigurationError(field, f"a size {low}below 8EiB ({SIZE_FORMS})", value)
    return size
