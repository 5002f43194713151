"""The Pod Security "restricted" profile, as it bears on the overrides.

Under the profile (``pod_security_profile='restricted'``, the default) the fit stage refuses
whatever contradicts it: host network, host ports, volume types other than configMap, csi,
downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret, and init
containers that are privileged, escalate privileges, add capabilities other than
NET_BIND_SERVICE, keep capabilities, run as root, or use unconfined seccomp or AppArmor or a
custom SELinux type. Then the assembler fills the profile's container settings in where an init
container left them unset (``harden_init_containers``): Pod Security judges init containers too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.kube_syntax import deep_copy
from k8s_step_operator._job.overrides.allowed import CONTAINER, POD, named_containers
from k8s_step_operator._job.overrides.volumes import volume_type

__all__ = [
    "RESTRICTED_CAPABILITIES",
    "RESTRICTED_CONTAINER_CONTEXT",
    "RESTRICTED_VOLUME_TYPES",
    "check_restricted",
    "harden_init_containers",
]

# What Pod Security "restricted" allows (policy/restricted: volume types, capabilities, SELinux).
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
_RESTRICTED_SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_CONTAINER_CONTEXT: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_NONE_PROFILE = "pod_security_profile='none'"


def _restricted_refusal(field: str, what: str, value: Any = None) -> ConfigurationError:
    return ConfigurationError(
        field,
        f"{what} under pod_security_profile 'restricted' (drop the field, or set "
        f"{_NONE_PROFILE} where the namespace allows it)",
        value if isinstance(value, str | int | bool) else None,
    )


def check_restricted(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    volumes: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
) -> None:
    """Refuse what contradicts the restricted profile (see ``check_overrides_fit``)."""
    if pod.get("hostNetwork"):
        raise ConfigurationError(
            f"{POD}['hostNetwork']", f"hostNetwork only with {_NONE_PROFILE}", True
        )
    for i, volume in enumerate(volumes):
        kind = volume_type(volume)
        if kind not in RESTRICTED_VOLUME_TYPES:
            raise _restricted_refusal(
                f"{POD}['volumes'][{i}].{kind}",
                "a volume type of " + ", ".join(sorted(RESTRICTED_VOLUME_TYPES)),
                kind,
            )
    for where, c in named_containers(container, init_containers):
        key = "['ports']" if where == CONTAINER else ".ports"
        for j, port in enumerate(c.get("ports", [])):
            if port.get("hostPort"):
                raise _restricted_refusal(
                    f"{where}{key}[{j}].hostPort", "no hostPort", port["hostPort"]
                )
    for i, init in enumerate(init_containers):
        where = f"{POD}['initContainers'][{i}].securityContext"
        ctx = init.get("securityContext", {})
        if ctx.get("privileged"):
            raise _restricted_refusal(f"{where}.privileged", "no privileged container", True)
        if ctx.get("allowPrivilegeEscalation"):
            raise _restricted_refusal(
                f"{where}.allowPrivilegeEscalation", "no privilege escalation", True
            )
        caps = ctx.get("capabilities", {})
        for j, cap in enumerate(caps.get("add", [])):
            if cap not in RESTRICTED_CAPABILITIES:
                raise _restricted_refusal(
                    f"{where}.capabilities.add[{j}]", "no capability but NET_BIND_SERVICE", cap
                )
        if "drop" in caps and "ALL" not in caps["drop"]:
            raise _restricted_refusal(f"{where}.capabilities.drop", "dropping 'ALL'")
        if ctx.get("runAsNonRoot") is False:
            raise _restricted_refusal(f"{where}.runAsNonRoot", "running as non-root", False)
        if ctx.get("runAsUser") == 0:
            raise _restricted_refusal(f"{where}.runAsUser", "a non-zero UID", 0)
        for key in ("seccompProfile", "appArmorProfile"):
            if ctx.get(key, {}).get("type") == "Unconfined":
                raise _restricted_refusal(
                    f"{where}.{key}.type", "RuntimeDefault or Localhost", "Unconfined"
                )
        selinux = ctx.get("seLinuxOptions", {})
        for key in ("user", "role"):
            if selinux.get(key):
                raise _restricted_refusal(
                    f"{where}.seLinuxOptions.{key}", "no SELinux user or role", selinux[key]
                )
        if selinux.get("type", "") not in _RESTRICTED_SELINUX_TYPES:
            raise _restricted_refusal(
                f"{where}.seLinuxOptions.type",
                "an SELinux type of "
                + ", ".join(sorted(t for t in _RESTRICTED_SELINUX_TYPES if t)),
                selinux["type"],
            )


def harden_init_containers(init_containers: Sequence[dict[str, Any]]) -> None:
    """Fill the restricted profile's container settings in where init containers left them out.

    ``check_overrides_fit`` has refused every value that contradicts the profile, so this only
    adds: ``allowPrivilegeEscalation: false``, ``capabilities.drop: [ALL]``, ``runAsNonRoot:
    true`` and the ``RuntimeDefault`` seccomp profile.
    """
    for init in init_containers:
        ctx = init.setdefault("securityContext", {})
        for key, value in RESTRICTED_CONTAINER_CONTEXT.items():
            if key not in ctx:
                ctx[key] = deep_copy(value)
        caps = ctx["capabilities"]
        if "drop" not in caps:
            caps["drop"] = ["ALL"]
