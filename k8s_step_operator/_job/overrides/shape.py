"""The shape stage, run by the settings model: only allowed keys, each as the API accepts it.

Unknown nested keys are refused rather than passed on unchecked: what is not checked here could
be refused by the server, which this library promises never happens. Errors name the key as
written (``['volumes'][0].name``); the settings model prefixes the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.kube_syntax import json_copy
from k8s_step_operator._job.overrides.allowed import (
    ALLOWED_CONTAINER_OVERRIDE_KEYS,
    ALLOWED_POD_SPEC_OVERRIDE_KEYS,
    TOP_TYPES,
)
from k8s_step_operator._job.overrides.checkers import Check
from k8s_step_operator._job.overrides.containers import CONTAINER_FIELDS
from k8s_step_operator._job.overrides.pod_fields import POD_FIELDS

__all__ = ["check_container_overrides", "check_pod_spec_overrides"]


def _check_overrides(
    value: object, allowed: frozenset[str], fields: Mapping[str, Check]
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("", "a mapping of camelCase field names to values", None)
    result: dict[str, Any] = {}
    for key, item in value.items():
        path = f"[{key!r}]"
        if key not in allowed:
            raise ConfigurationError(path, "one of " + ", ".join(sorted(allowed)), key)
        expected = TOP_TYPES[key]
        if not isinstance(item, expected) or (expected is int and isinstance(item, bool)):
            name = expected.__name__ if isinstance(expected, type) else str(expected)
            raise ConfigurationError(path, f"a {name}", type(item).__name__)
        result[key] = fields[key](path, json_copy(path, item))
    return result


def check_pod_spec_overrides(value: object) -> dict[str, Any]:
    """The checked pod-spec overrides (a private JSON copy); errors name ``['key']...``.

    Raises:
        ConfigurationError: If a key is not allowed, or a value is not what the API accepts.
    """
    return _check_overrides(value, ALLOWED_POD_SPEC_OVERRIDE_KEYS, POD_FIELDS)


def check_container_overrides(value: object) -> dict[str, Any]:
    """The checked container overrides (a private JSON copy); errors name ``['key']...``.

    Raises:
        ConfigurationError: If a key is not allowed, or a value is not what the API accepts.
    """
    return _check_overrides(value, ALLOWED_CONTAINER_OVERRIDE_KEYS, CONTAINER_FIELDS)
