"""Kubernetes' own syntax rules, checked before anything is sent.

The API server would reject these with a 422 naming its own field path; checking here lets the
error name *our* setting and say what is accepted. The rules follow
k8s.io/apimachinery/pkg/util/validation (quantities are in ``quantity``). Also here: the deep
copies of JSON data that keep a Job from aliasing the settings it was built from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from k8s_step_operator._errors import ConfigurationError

__all__ = [
    "IMAGE_RULE",
    "MAX_INT32",
    "MAX_INT64",
    "check_dns_label",
    "check_dns_subdomain",
    "check_env_name",
    "check_label_value",
    "check_qualified_name",
    "check_secret_key",
    "deep_copy",
    "is_dns_label",
    "is_dns_subdomain",
    "is_image_ref",
    "is_label_value",
    "is_qualified_name",
    "is_secret_key",
    "json_copy",
]


def deep_copy(value: Any) -> Any:
    """A deep copy of JSON data (mappings and sequences become dicts and lists)."""
    if isinstance(value, Mapping):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [deep_copy(v) for v in value]
    return value


def json_copy(field: str, value: Any) -> Any:
    """A deep copy of ``value`` through JSON; anything JSON cannot hold is refused.

    Raises:
        ConfigurationError: ``value`` holds something other than JSON data (or NaN).
    """
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            field, "JSON-compatible data (mappings, lists, strings, numbers)", None, detail=str(exc)
        ) from exc


# Matched with fullmatch: "$" would accept a trailing newline, which the API server refuses.
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# The classic C-identifier-like rule; accepted by every server version (newer ones allow more).
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# Keys of Secrets and ConfigMaps (IsConfigMapKey): also not ".", "..", nor starting with "..".
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")

QUALIFIED_NAME_RULE = (
    "a key of at most 63 characters [A-Za-z0-9._-] starting and ending alphanumeric, "
    "optionally prefixed by a DNS subdomain and '/' (e.g. 'example.com/my-key')"
)
LABEL_VALUE_RULE = (
    "a label value: empty, or at most 63 characters [A-Za-z0-9._-] starting and ending alphanumeric"
)
DNS_LABEL_RULE = "a DNS-1123 label: at most 63 characters [a-z0-9-], alphanumeric at both ends"
DNS_SUBDOMAIN_RULE = (
    "a DNS-1123 subdomain: at most 253 characters of dot-separated [a-z0-9-] labels, "
    "each alphanumeric at both ends"
)


def is_dns_label(value: str) -> bool:
    """True when ``value`` is a DNS-1123 label (names of Jobs, namespaces...)."""
    return len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    """True when ``value`` is a DNS-1123 subdomain."""
    return len(value) <= 253 and _DNS_SUBDOMAIN.fullmatch(value) is not None


def is_qualified_name(value: str) -> bool:
    """True when ``value`` is a valid label or annotation key."""
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return False
    return len(name) <= 63 and _QUALIFIED_NAME_PART.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    """True when ``value`` is a valid label value."""
    return value == "" or (len(value) <= 63 and _QUALIFIED_NAME_PART.fullmatch(value) is not None)


def check_dns_label(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not is_dns_label(value):
        raise ConfigurationError(field, DNS_LABEL_RULE, value)
    return value


def check_dns_subdomain(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not is_dns_subdomain(value):
        raise ConfigurationError(field, DNS_SUBDOMAIN_RULE, value)
    return value


def check_qualified_name(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not is_qualified_name(value):
        raise ConfigurationError(field, QUALIFIED_NAME_RULE, value)
    return value


def check_label_value(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not is_label_value(value):
        raise ConfigurationError(field, LABEL_VALUE_RULE, value)
    return value


def check_env_name(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ConfigurationError(
            field,
            "an environment variable name: [-._a-zA-Z] then [-._a-zA-Z0-9]*",
            value,
        )
    return value


def is_secret_key(value: str) -> bool:
    """True when ``value`` is a key of a Secret or ConfigMap."""
    return (
        len(value) <= 253
        and _SECRET_KEY.fullmatch(value) is not None
        and value not in {".", ".."}
        and not value.startswith("..")
    )


# The API's int32 fields: UIDs and GIDs, backoffLimit, ttlSecondsAfterFinished, maxSkew.
MAX_INT32 = 2**31 - 1
# The API's int64 fields: activeDeadlineSeconds, tolerationSeconds, grace periods; quantities in
# bytes.
MAX_INT64 = 2**63 - 1

IMAGE_RULE = "a non-empty image reference without whitespace"


def is_image_ref(value: object) -> bool:
    """Whether ``value`` may be an image reference (the registry judges the rest)."""
    return (
        isinstance(value, str)
        and bool(value)
        and not any(c.isspace() or not c.isprintable() for c in value)
    )


def check_secret_key(field: str, value: str) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field``."""
    if not isinstance(value, str) or not is_secret_key(value):
        raise ConfigurationError(
            field,
            "a Secret key: at most 253 characters [-._a-zA-Z0-9], not '.', '..' nor starting "
            "with '..'",
            value,
        )
    return value
