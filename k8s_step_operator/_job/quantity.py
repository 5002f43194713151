"""Kubernetes quantities (``500m``, ``16Gi``, ``12e6``) as exact decimals.

Two readers, two rules, one grammar:

* ``parse_quantity`` reads what the API server writes (node capacity, pod requests, limit
  ranges): the whole grammar of k8s.io/apimachinery/pkg/api/resource, so that no value a cluster
  reports is ever misread. Floats would round ``3906252Ki`` or ``100u``; the result is an exact
  ``Decimal``.
* ``check_quantity`` judges what a user writes in settings: a plain decimal number with an
  optional suffix (``1Gi``, ``512M``, ``0.5``), milli only where a fraction of a unit makes
  sense. Signs and exponents are legal Kubernetes but almost always a mistake in a size, so they
  are refused with an error that names the setting. It parses with the same grammar and then
  restricts the form.

The grammar (apimachinery's ``quantity.go``)::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>
    <sign>            ::= "+" | "-"
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>   (an integer exponent)

Go's parser also reads ``"."``, ``"+"`` and ``"-"`` as zero; no server writes them, and they are
refused here: a quantity has at least one digit.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from k8s_step_operator._errors import ConfigurationError

__all__ = [
    "BINARY_SUFFIXES",
    "DECIMAL_SUFFIXES",
    "USER_SUFFIXES",
    "check_quantity",
    "is_user_quantity",
    "parse_quantity",
]

# Powers of ten of the decimal SI suffixes.
DECIMAL_SUFFIXES: dict[str, int] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
# Powers of two of the binary SI suffixes.
BINARY_SUFFIXES: dict[str, int] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
# What users may write in settings: no nano or micro (no resource is that small).
USER_SUFFIXES: tuple[str, ...] = (
    "Ki",
    "Mi",
    "Gi",
    "Ti",
    "Pi",
    "Ei",
    "m",
    "k",
    "M",
    "G",
    "T",
    "P",
    "E",
)

_GRAMMAR = re.compile(
    r"""
    (?P<sign>[+-]?)
    (?P<whole>[0-9]*)
    (?:(?P<point>\.)(?P<fraction>[0-9]*))?
    (?:
        (?P<exponent>[eE][+-]?[0-9]+)
      | (?P<suffix>[KMGTPE]i|[numkMGTPE])
    )?
    """,
    re.VERBOSE,
)
# Go reads the exponent as an int32 (and silently wraps beyond it).
_MAX_EXPONENT = 2**31 - 1
# Exact arithmetic: enough precision and exponent range that nothing is ever rounded.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)


@dataclass(frozen=True)
class _Parsed:
    """A quantity split into what was written, and its value."""

    sign: str
    whole: str
    point: bool
    fraction: str
    exponent: int | None
    suffix: str
    value: Decimal


def _parse(text: str) -> _Parsed:
    match = _GRAMMAR.fullmatch(text)
    if match is None or not (match["whole"] or match["fraction"]):
        raise ValueError(
            f"not a Kubernetes quantity: {text!r} (a number with an optional suffix: "
            "n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, or an exponent such as e6)"
        )
    sign, whole, fraction = match["sign"], match["whole"], match["fraction"] or ""
    number = Decimal(f"{sign}{whole or '0'}.{fraction or '0'}")
    exponent: int | None = None
    suffix = match["suffix"] or ""
    if match["exponent"] is not None:
        exponent = int(match["exponent"][1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"quantity exponent out of range: {text!r}")
        value = number.scaleb(exponent, _EXACT)
    elif suffix in BINARY_SUFFIXES:
        value = _EXACT.multiply(number, Decimal(2 ** BINARY_SUFFIXES[suffix]))
    else:
        value = number.scaleb(DECIMAL_SUFFIXES[suffix], _EXACT)
    return _Parsed(sign, whole, match["point"] is not None, fraction, exponent, suffix, value)


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """The exact value of a Kubernetes quantity, as the API server writes it.

    Accepts the whole grammar (``100u``, ``1.5Gi``, ``+8``, ``12e6``, ``-1``), surrounding
    whitespace (as the server's JSON decoding does), and plain numbers (an ``int``, a finite
    ``float`` read through its shortest decimal form, a finite ``Decimal``).

    Raises:
        ValueError: If ``value`` is not a quantity (never another exception).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a Kubernetes quantity: {value!r} (a boolean)")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a Kubernetes quantity: {value!r}")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a Kubernetes quantity: {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a Kubernetes quantity: {value!r} (a {type(value).__name__})")
    return _parse(value.strip(" \t\r\n")).value


def is_user_quantity(value: object, *, allow_milli: bool = True) -> bool:
    """Whether ``value`` is a quantity in the form settings accept.

    That form is a string of digits with an optional fraction (``1``, ``0.5``, ``2.25``) and an
    optional suffix from ``USER_SUFFIXES``; ``m`` only when ``allow_milli``. No sign, no exponent,
    no whitespace, no bare point (``1.``, ``.5``).
    """
    if not isinstance(value, str):
        return False
    try:
        parsed = _parse(value)
    except ValueError:
        return False
    return (
        not parsed.sign
        and parsed.exponent is None
        and bool(parsed.whole)
        and (not parsed.point or bool(parsed.fraction))
        and (parsed.suffix == "" or parsed.suffix in USER_SUFFIXES)
        and (allow_milli or parsed.suffix != "m")
    )


def check_quantity(field: str, value: object, *, allow_milli: bool = True) -> Decimal:
    """The value of a quantity a user wrote, or a ``ConfigurationError`` naming ``field``.

    Raises:
        ConfigurationError: If ``value`` is not in the form ``is_user_quantity`` accepts.
    """
    if not is_user_quantity(value, allow_milli=allow_milli):
        suffixes = (
            "m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei"
            if allow_milli
            else ("k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei")
        )
        raise ConfigurationError(
            field,
            f"a quantity such as '512Mi', '1Gi' or '2G' (digits, an optional fraction, an "
            f"optional suffix {suffixes})",
            value,
        )
    assert isinstance(value, str)
    return _parse(value).value
