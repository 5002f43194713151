"""The small checkers every field table is written with.

A checker takes the path of a field as an error names it (``['volumes'][0].name``) and the
value; it returns the value (a checked copy for containers) or raises ``ConfigurationError``
saying what is accepted. The combinators (``fields``, ``list_of``, ``string_map``) build the
checkers of nested objects out of these, so that every table reads like the API's own schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.kube_syntax import (
    IMAGE_RULE,
    MAX_INT32,
    check_dns_label,
    check_dns_subdomain,
    check_image,
    check_label_value,
    check_qualified_name,
    check_secret_key,
)
from k8s_step_operator._step_operator_api.sizes import check_size

__all__ = [
    "Check",
    "absolute_path",
    "boolean",
    "choice",
    "dns_label",
    "dns_subdomain",
    "fail",
    "fields",
    "file_mode",
    "image",
    "int32",
    "integer",
    "ip_address",
    "label_value",
    "list_of",
    "nonempty",
    "port",
    "port_name",
    "port_or_name",
    "qualified_name",
    "relative_path",
    "secret_key",
    "size",
    "string",
    "string_map",
    "unique",
]

# Takes (path, value), returns the checked value or raises ConfigurationError.
Check = Callable[[str, Any], Any]


def fail(path: str, accepted: str, value: Any = None) -> ConfigurationError:
    """The error for ``path``; the value is shown only when it is a scalar."""
    shown = value if isinstance(value, str | int | float | bool) else None
    return ConfigurationError(path, accepted, shown)


def boolean(path: str, value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise fail(path, "true or false", value)
    return value


def string(path: str, value: Any) -> str:
    """Any string."""
    if not isinstance(value, str):
        raise fail(path, "a string", value)
    return value


def nonempty(path: str, value: Any) -> str:
    """A string that is not empty."""
    if not isinstance(value, str) or not value:
        raise fail(path, "a non-empty string", value)
    return value


def integer(low: int, high: int) -> Check:
    """An integer from ``low`` to ``high`` (a bool is not one)."""

    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(path, f"an integer from {low} to {high}", value)
        return value

    return check


def choice(*choices: str) -> Check:
    """One of ``choices``, as the API spells them."""

    def check(path: str, value: Any) -> str:
        if value not in choices:
            raise fail(path, "one of " + ", ".join(repr(c) for c in choices), value)
        return str(value)

    return check


dns_label: Check = check_dns_label
dns_subdomain: Check = check_dns_subdomain
qualified_name: Check = check_qualified_name
label_value: Check = check_label_value
secret_key: Check = check_secret_key
port = integer(1, 65535)
file_mode = integer(0, 0o777)
int32 = integer(0, MAX_INT32)
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")


def port_name(path: str, value: Any) -> str:
    """A port name as the API accepts it (an IANA service name)."""
    if (
        not isinstance(value, str)
        or _IANA_SVC_NAME.fullmatch(value) is None
        or "--" in value
        or not re.search("[a-z]", value)
    ):
        raise fail(
            path,
            "a port name: at most 15 characters [a-z0-9-], with a letter, alphanumeric at both "
            "ends, no '--'",
            value,
        )
    return value


def port_or_name(path: str, value: Any) -> int | str:
    """A port number, or the name of a port of the container."""
    if isinstance(value, str):
        return port_name(path, value)
    return int(port(path, value))


def ip_address(path: str, value: Any) -> str:
    """An IPv4 or IPv6 address, without an IPv6 zone."""
    try:
        # Kubernetes refuses zoned IPv6 addresses (fe80::1%eth0).
        if not isinstance(value, str) or "%" in value:
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        raise fail(path, "an IP address such as '10.0.0.1'", value) from None
    return value


def absolute_path(path: str, value: Any) -> str:
    """An absolute path without ``..`` elements."""
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise fail(path, "an absolute path such as '/data'", value)
    if ".." in value.split("/"):
        raise fail(path, "a path without '..' elements", value)
    return value


def relative_path(*, allow_empty: bool = False) -> Check:
    """A relative path without ``..`` (empty only if ``allow_empty``)."""

    def check(path: str, value: Any) -> str:
        if not isinstance(value, str) or (not value and not allow_empty):
            raise fail(path, "a relative path such as 'config/app.yaml'", value)
        if value.startswith("/") or ".." in value.split("/") or value.startswith(".."):
            raise fail(path, "a relative path without '..' (not absolute)", value)
        return value

    return check


def image(path: str, value: Any) -> str:
    """A container image reference."""
    if not isinstance(value, str):
        raise fail(path, IMAGE_RULE, value)
    return check_image(path, value)


def size(*, positive: bool) -> Check:
    """A size in bytes in either spelling, below 8EiB (above 0 if ``positive``).

    The Job gets its Kubernetes quantity (``16GiB`` -> ``16Gi``).
    """

    def check(path: str, value: Any) -> str:
        return check_size(path, value, positive=positive).quantity

    return check


def list_of(item: Check, *, min_items: int = 0, max_items: int | None = None) -> Check:
    """A list whose items pass ``item``, with a bound on how many."""

    def check(path: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise fail(path, "a list")
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            most = f" and at most {max_items}" if max_items is not None else ""
            raise fail(path, f"a list of at least {min_items}{most} items", len(value))
        return [item(f"{path}[{i}]", v) for i, v in enumerate(value)]

    return check


def string_map(key: Check, value: Check) -> Check:
    """A mapping whose keys pass ``key`` and values pass ``value``."""

    def check(path: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise fail(path, "a mapping")
        result: dict[str, Any] = {}
        for k, v in data.items():
            key(f"{path}[{k!r}]", k)
            result[k] = value(f"{path}[{k!r}]", v)
        return result

    return check


def fields(
    spec: Mapping[str, Check],
    *,
    required: Iterable[str] = (),
    one_of: Sequence[str] = (),
    what: str = "",
) -> Check:
    """A mapping with the keys of ``spec``; ``required`` present; exactly one of ``one_of``."""
    must = tuple(required)

    def check(path: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise fail(path, f"a mapping{' ' + what if what else ''}")
        for key in data:
            if key not in spec:
                raise fail(
                    f"{path}.{key}" if path else key,
                    "one of the fields checked here: " + ", ".join(sorted(spec)),
                    key,
                )
        for key in must:
            if key not in data:
                raise fail(f"{path}.{key}" if path else key, "a value (required)")
        if one_of and sum(k in data for k in one_of) != 1:
            raise fail(path, "exactly one of " + ", ".join(one_of))
        return {k: spec[k](f"{path}.{k}" if path else k, v) for k, v in data.items()}

    return check


def unique(path: str, items: Sequence[Mapping[str, Any]], key: str, what: str) -> None:
    """Refuse an item of ``items`` whose ``key`` an earlier item has already."""
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = item.get(key)
        if value is None:
            continue
        if value in seen:
            raise fail(f"{path}[{i}].{key}", f"{what} used once", value)
        seen.add(value)
