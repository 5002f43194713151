"""Which keys an override may set, the type each must have, and how errors name them.

Only fields the settings do not model are allowed: what the builder sets itself stays under the
settings' control, and a field that could make the step privileged is never reachable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ALLOWED_CONTAINER_OVERRIDE_KEYS",
    "ALLOWED_POD_SPEC_OVERRIDE_KEYS",
    "CONTAINER",
    "POD",
    "TOP_TYPES",
    "named_containers",
]

# Pod-spec fields the settings do not model. Fields the builder sets (containers, restartPolicy,
# securityContext, nodeSelector, tolerations, ...) are refused so the settings stay the single
# source for them; `privileged` lives in container securityContext and is never reachable for
# the step's container. preemptionPolicy is not here: the Priority admission plugin computes it
# from the PriorityClass and refuses a pod that sets another value.
ALLOWED_POD_SPEC_OVERRIDE_KEYS: frozenset[str] = frozenset(
    {
        "volumes",
        "initContainers",
        "hostAliases",
        "dnsPolicy",
        "dnsConfig",
        "topologySpreadConstraints",
        "schedulerName",
        "runtimeClassName",
        "enableServiceLinks",
        "terminationGracePeriodSeconds",
        "hostNetwork",
        "hostname",
        "subdomain",
        "shareProcessNamespace",
        "readinessGates",
        "resourceClaims",
        "os",
    }
)
ALLOWED_CONTAINER_OVERRIDE_KEYS: frozenset[str] = frozenset(
    {
        "volumeMounts",
        "volumeDevices",
        "workingDir",
        "ports",
        "lifecycle",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "resizePolicy",
        "stdin",
        "tty",
    }
)
TOP_TYPES: dict[str, type | tuple[type, ...]] = {
    "volumes": list,
    "initContainers": list,
    "hostAliases": list,
    "topologySpreadConstraints": list,
    "readinessGates": list,
    "resourceClaims": list,
    "dnsConfig": dict,
    "os": dict,
    "dnsPolicy": str,
    "schedulerName": str,
    "runtimeClassName": str,
    "hostname": str,
    "subdomain": str,
    "enableServiceLinks": bool,
    "hostNetwork": bool,
    "shareProcessNamespace": bool,
    "terminationGracePeriodSeconds": int,
    "volumeMounts": list,
    "volumeDevices": list,
    "ports": list,
    "resizePolicy": list,
    "lifecycle": dict,
    "startupProbe": dict,
    "livenessProbe": dict,
    "readinessProbe": dict,
    "workingDir": str,
    "terminationMessagePath": str,
    "terminationMessagePolicy": str,
    "stdin": bool,
    "tty": bool,
}


# How errors of the fit stage name the overrides: as the settings fields they were written in.
POD = "settings.pod_spec_overrides"
CONTAINER = "settings.container_overrides"


def named_containers(
    container: Mapping[str, Any], init_containers: Sequence[Mapping[str, Any]]
) -> list[tuple[str, Mapping[str, Any]]]:
    """The step's container and the init containers, each with the path errors name it by."""
    return [
        (CONTAINER, container),
        *((f"{POD}['initContainers'][{i}]", c) for i, c in enumerate(init_containers)),
    ]
