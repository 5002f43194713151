"""Kubernetes quantities: every form the API server writes, exactly; user input, strictly."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from k8s_step_operator import ConfigurationError
from k8s_step_operator._job.quantity import (
    BINARY_SUFFIXES,
    DECIMAL_SUFFIXES,
    check_quantity,
    is_user_quantity,
    parse_quantity,
)

# Values as API servers write them (node capacity and allocatable, pod requests, limit ranges,
# resource quotas), with their exact values.
SERVER_TABLE = [
    ("0", 0),
    ("110", 110),
    ("8", 8),
    ("+8", 8),
    ("-1", -1),
    ("100m", Decimal("0.1")),
    ("1500m", Decimal("1.5")),
    ("15500m", Decimal("15.5")),
    ("100u", Decimal("0.0001")),
    ("5n", Decimal("0.000000005")),
    ("1k", 1000),
    ("2M", 2_000_000),
    ("4G", 4 * 10**9),
    ("1T", 10**12),
    ("3P", 3 * 10**15),
    ("1E", 10**18),
    ("1Ki", 1024),
    ("3906252Ki", 3906252 * 1024),
    ("7865Mi", 7865 * 2**20),
    ("16Gi", 16 * 2**30),
    ("1.5Gi", Decimal(3 * 2**29)),
    ("2Ti", 2 * 2**40),
    ("1Pi", 2**50),
    ("8Ei", 8 * 2**60),
    ("12e6", 12_000_000),
    ("129e6", 129_000_000),
    ("1E3", 1000),
    ("1e-3", Decimal("0.001")),
    ("1e+3", 1000),
    ("1.", 1),
    (".5", Decimal("0.5")),
    ("0.5", Decimal("0.5")),
    ("00012", 12),
    ("9223372036854775807", 2**63 - 1),
    ("123456789012345678901234567890Ei", 123456789012345678901234567890 * 2**60),
    (" 1Gi ", 2**30),
]


@pytest.mark.parametrize(("text", "expected"), SERVER_TABLE)
def test_server_formatted_quantities(text: str, expected: int | Decimal) -> None:
    value = parse_quantity(text)
    assert isinstance(value, Decimal)
    assert value == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8, 8),
        (0, 0),
        (0.5, Decimal("0.5")),
        (0.1, Decimal("0.1")),
        (Decimal("2.5"), Decimal("2.5")),
    ],
)
def test_numbers(value: int | float | Decimal, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        ".",
        "+",
        "-",
        "e3",
        "1e",
        "1K",
        "1KB",
        "1kb",
        "1Gb",
        "1gi",
        "1 Gi",
        "1..5",
        "1.5.5",
        "1x",
        "Gi",
        "1Gi1",
        "--1",
        "1e3k",
        "1e99999999999",
        "½",
        "\uff11",  # a full-width digit
        "nan",
        "inf",
        "0x10",
        "1_000",
    ],
)
def test_malformed_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


@pytest.mark.parametrize("value", [True, None, [1], float("nan"), float("inf"), Decimal("NaN")])
def test_non_quantities_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)  # type: ignore[arg-type]


@given(st.text(max_size=12))
@example("1e2147483648")
@settings(max_examples=500)
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        value = parse_quantity(text)
    except ValueError:
        return
    assert value.is_finite()


# --- a property: what the server writes is read back exactly ---


@given(
    mantissa=st.integers(-(10**20), 10**20),
    suffix=st.sampled_from(sorted(DECIMAL_SUFFIXES)),
)
@settings(max_examples=300)
def test_decimal_si_round_trip(mantissa: int, suffix: str) -> None:
    expected = Decimal(mantissa).scaleb(DECIMAL_SUFFIXES[suffix])
    assert parse_quantity(f"{mantissa}{suffix}") == expected


@given(mantissa=st.integers(0, 10**20), suffix=st.sampled_from(sorted(BINARY_SUFFIXES)))
@settings(max_examples=300)
def test_binary_si_round_trip(mantissa: int, suffix: str) -> None:
    assert parse_quantity(f"{mantissa}{suffix}") == mantissa * 2 ** BINARY_SUFFIXES[suffix]


@given(
    mantissa=st.integers(0, 10**12),
    exponent=st.integers(-30, 30),
    letter=st.sampled_from("eE"),
)
@settings(max_examples=300)
def test_decimal_exponent_round_trip(mantissa: int, exponent: int, letter: str) -> None:
    assert parse_quantity(f"{mantissa}{letter}{exponent}") == Decimal(mantissa).scaleb(exponent)


@given(
    value=st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=0, max_value=10**9)
)
@settings(max_examples=300)
def test_plain_decimals_are_exact(value: Decimal) -> None:
    assert parse_quantity(format(value, "f")) == value


def test_agrees_with_the_client_library_on_canonical_forms() -> None:
    from kubernetes.utils import parse_quantity as client_parse

    for text, _ in SERVER_TABLE:
        if ("e" in text.lower() and not text.endswith("E")) or text.strip() != text:
            continue
        if text in {"1.", ".5", "+8"}:
            continue
        assert parse_quantity(text) == client_parse(text), text


# --- user input: the stricter form ---


@pytest.mark.parametrize("text", ["1", "0", "0.5", "512Mi", "1Gi", "2G", "1k", "500m", "1.5Ei"])
def test_user_form_accepted(text: str) -> None:
    assert is_user_quantity(text)
    assert check_quantity("settings.x", text) == parse_quantity(text)


@pytest.mark.parametrize(
    "text", ["+1", "-1", "1e3", "1E3", ".5", "1.", "100u", "5n", " 1Gi", "1Gi ", "1K", "", "x"]
)
def test_user_form_refused(text: str) -> None:
    assert not is_user_quantity(text)
    with pytest.raises(ConfigurationError) as exc:
        check_quantity("settings.shm_size", text)
    assert exc.value.field == "settings.shm_size"


def test_milli_is_optional_for_users() -> None:
    assert is_user_quantity("500m")
    assert not is_user_quantity("500m", allow_milli=False)
    with pytest.raises(ConfigurationError):
        check_quantity("settings.shm_size", "500m", allow_milli=False)
    assert not is_user_quantity(5)
