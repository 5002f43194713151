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
    "MAX_ARG_BYTES",
    "MAX_INT32",
    "MAX_INT64",
    "MAX_OBJECT_BYTES",
    "MAX_SECRET_BYTES",
    "check_dns_label",
    "check_dns_subdomain",
    "check_env_name",
    "check_image",
    "check_label_value",
    "check_qualified_name",
    "check_secret_key",
    "deep_copy",
    "image_ref_problem",
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

# The sizes the server (or the node) refuses, checked before anything is sent.
# etcd stores an object of at most 1.5 MiB (its default --max-request-bytes); the API server
# answers a bigger Job with a 422 about its labels, or 413 past 3 MiB. The Job's JSON must leave
# room for what the server adds (uid, status, managed fields), and the pod (and Kueue's Workload)
# copy its template.
MAX_OBJECT_BYTES = 1_500_000
# Linux refuses to start a process whose argument or "NAME=value" string is 128 KiB or more
# (MAX_ARG_STRLEN): the container would fail with "argument list too long".
MAX_ARG_BYTES = 128 * 1024 - 1
# A Secret holds at most 1 MiB of data.
MAX_SECRET_BYTES = 1024 * 1024

IMAGE_RULE = (
    "an image reference [registry[:port]/]repository[:tag][@digest] with the repository in lower "
    "case, such as 'registry.example.com/team/train:1.4' or 'localhost/step:dev'"
)

# The kubelet reads an image with distribution/reference's ParseNormalizedNamed and refuses what
# it cannot read (InvalidImageName): the same grammar, from its regexp.go.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_NAME_MAX = 255


def image_ref_problem(value: object) -> str:
    """What the kubelet would refuse in an image reference (``""``: nothing).

    The rules of distribution/reference's ``ParseNormalizedNamed``: an optional registry host
    (a first component with a dot, a colon, or ``localhost``), lowercase path components joined
    by ``/`` with single separators (``.``, ``_``, ``__``, dashes), an optional tag of at most 128
    characters, an optional digest of a known algorithm; at most 255 characters for the name with
    Docker Hub's ``docker.io/library/`` implied.
    """
    if not isinstance(value, str) or not value:
        return "an empty or non-string reference"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "whitespace or a control character"
    if re.fullmatch(r"[a-f0-9]{64}", value):
        return "a bare 64-character hexadecimal id, which is not a name"
    first, slash, rest = value.partition("/")
    registry = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    remainder = rest if registry else value
    repository = remainder.split("@", 1)[0].split(":", 1)[0]
    if repository.lower() != repository:
        return f"the repository {repository!r} has upper-case letters"
    match = _REFERENCE.fullmatch(value)
    if match is None:
        return "not of the form [registry[:port]/]repository[:tag][@digest]"
    name = (
        match["name"]
        if registry
        else f"docker.io/{'' if '/' in value else 'library/'}{match['name']}"
    )
    if len(name) > _NAME_MAX:
        return f"a repository name of {len(name)} characters (at most {_NAME_MAX})"
    digest = match["digest"]
    if digest:
        algorithm, _, hex_part = digest.partition(":")
        size = _DIGEST_HEX.get(algorithm)
        if size is None:
            return f"the digest algorithm {algorithm!r} (sha256, sha384 or sha512)"
        if len(hex_part) != size or hex_part.lower() != hex_part:
            return f"a {algorithm} digest that is not {size} lowercase hexadecimal digits"
    return ""


def is_image_ref(value: object) -> bool:
    """Whether the kubelet can read ``value`` as an image reference (``image_ref_problem``)."""
    return image_ref_problem(value) == ""


def check_image(field: str, value: object) -> str:
    """Return ``value`` or raise ``ConfigurationError`` naming ``field`` and what is wrong."""
    problem = image_ref_problem(value)
    if problem:
        raise ConfigurationError(field, IMAGE_RULE, value, detail=problem)
    assert isinstance(value, str)
    return value


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
