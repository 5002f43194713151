"""The escape hatch: pod-spec and container fields the settings do not model, checked.

``pod_spec_overrides`` and ``container_overrides`` pass Kubernetes fields through, so they are
where a Job could still reach the API server and be refused, or be admitted and then break the
pod. Three stages keep that from happening:

* **shape** (``check_pod_spec_overrides``, ``check_container_overrides``, run by the settings
  model at construction): only known keys, each with the type and syntax the API server
  validates (names, paths, ports, quantities, enums, exactly one volume source or probe
  handler...). Unknown nested keys are refused rather than passed on unchecked: what is not
  checked here could be refused by the server, which this library promises never happens.
* **fit** (``check_overrides_fit``, run by the validation stage): what depends on other settings
  or on the fields the builder sets itself. Volume and container names must not collide with
  ours; mounts must name a volume; a host port must be unique; a ``sleep`` must end within the
  grace period; and, under the Pod Security "restricted" profile, nothing may contradict it:
  host network, host ports, volume types other than configMap, csi, downwardAPI, emptyDir,
  ephemeral, persistentVolumeClaim, projected and secret, and init containers that are
  privileged, escalate privileges, add capabilities other than NET_BIND_SERVICE, keep
  capabilities, run as root, or use unconfined seccomp or AppArmor or a custom SELinux type.
* **apply** (``harden_init_containers``, run by the assembler): init containers run in the same
  pod and Pod Security judges them too, so the profile's container settings are filled in where
  an init container left them unset. The fit stage guarantees nothing it fills in contradicts
  what the user wrote.

Errors name the override as written: ``settings.pod_spec_overrides['initContainers'][0]
.securityContext.privileged``, and say what would work (drop the field, or choose
``pod_security_profile='none'``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.env import check_env_name_allowed
from k8s_step_operator._job.kube_syntax import (
    IMAGE_RULE,
    MAX_INT32,
    MAX_INT64,
    check_dns_label,
    check_dns_subdomain,
    check_label_value,
    check_qualified_name,
    check_secret_key,
    deep_copy,
    is_dns_subdomain,
    is_image_ref,
    json_copy,
)
from k8s_step_operator._job.quantity import check_quantity

__all__ = [
    "ALLOWED_CONTAINER_OVERRIDE_KEYS",
    "ALLOWED_POD_SPEC_OVERRIDE_KEYS",
    "RESTRICTED_CAPABILITIES",
    "RESTRICTED_CONTAINER_CONTEXT",
    "RESTRICTED_VOLUME_TYPES",
    "check_container_overrides",
    "check_overrides_fit",
    "check_pod_spec_overrides",
    "harden_init_containers",
]

_DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds

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

Check = Callable[[str, Any], Any]


# --- the keys, and their top-level types -------------------------------------------------------

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
_TOP_TYPES: dict[str, type | tuple[type, ...]] = {
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


# --- small checkers: each takes (path, value) and returns the value or raises ---------------------


def _fail(path: str, accepted: str, value: Any = None) -> ConfigurationError:
    shown = value if isinstance(value, str | int | float | bool) else None
    return ConfigurationError(path, accepted, shown)


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _str(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    return value


def _nonempty(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, "a non-empty string", value)
    return value


def _int(low: int, high: int) -> Check:
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(path, f"an integer from {low} to {high}", value)
        return value

    return check


def _enum(*choices: str) -> Check:
    def check(path: str, value: Any) -> str:
        if value not in choices:
            raise _fail(path, "one of " + ", ".join(repr(c) for c in choices), value)
        return str(value)

    return check


_dns_label: Check = check_dns_label
_dns_subdomain: Check = check_dns_subdomain
_qualified: Check = check_qualified_name
_label_value: Check = check_label_value
_secret_key: Check = check_secret_key
_port = _int(1, 65535)
_mode = _int(0, 0o777)
_int32 = _int(0, MAX_INT32)
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")
_HEADER_NAME = re.compile(r"[-A-Za-z0-9!#$%&'*+.^_`|~]+")
_CAPABILITY = re.compile(r"[A-Za-z0-9_]+")


def _iana_name(path: str, value: Any) -> str:
    if (
        not isinstance(value, str)
        or _IANA_SVC_NAME.fullmatch(value) is None
        or "--" in value
        or not re.search("[a-z]", value)
    ):
        raise _fail(
            path,
            "a port name: at most 15 characters [a-z0-9-], with a letter, alphanumeric at both "
            "ends, no '--'",
            value,
        )
    return value


def _port_or_name(path: str, value: Any) -> int | str:
    if isinstance(value, str):
        return _iana_name(path, value)
    return int(_port(path, value))


def _ip(path: str, value: Any) -> str:
    try:
        # Kubernetes refuses zoned IPv6 addresses (fe80::1%eth0).
        if not isinstance(value, str) or "%" in value:
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        raise _fail(path, "an IP address such as '10.0.0.1'", value) from None
    return value


def _absolute_path(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value:
        raise _fail(path, "an absolute path such as '/data'", value)
    if ".." in value.split("/"):
        raise _fail(path, "a path without '..' elements", value)
    return value


def _relative_path(*, allow_empty: bool = False) -> Check:
    def check(path: str, value: Any) -> str:
        if not isinstance(value, str) or (not value and not allow_empty):
            raise _fail(path, "a relative path such as 'config/app.yaml'", value)
        if value.startswith("/") or ".." in value.split("/") or value.startswith(".."):
            raise _fail(path, "a relative path without '..' (not absolute)", value)
        return value

    return check


def _image(path: str, value: Any) -> str:
    if not is_image_ref(value):
        raise _fail(path, IMAGE_RULE, value)
    return str(value)


def _size(*, positive: bool) -> Check:
    def check(path: str, value: Any) -> str:
        size = check_quantity(path, value, allow_milli=False)
        if (positive and size <= 0) or size > MAX_INT64:
            raise _fail(path, "a size below 8Ei such as '1Gi'" + (", above 0" * positive), value)
        return str(value)

    return check


def _list(item: Check, *, min_items: int = 0, max_items: int | None = None) -> Check:
    def check(path: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _fail(path, "a list")
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            most = f" and at most {max_items}" if max_items is not None else ""
            raise _fail(path, f"a list of at least {min_items}{most} items", len(value))
        return [item(f"{path}[{i}]", v) for i, v in enumerate(value)]

    return check


def _string_map(key: Check, value: Check) -> Check:
    def check(path: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _fail(path, "a mapping")
        result: dict[str, Any] = {}
        for k, v in data.items():
            key(f"{path}[{k!r}]", k)
            result[k] = value(f"{path}[{k!r}]", v)
        return result

    return check


def _fields(
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
            raise _fail(path, f"a mapping{' ' + what if what else ''}")
        for key in data:
            if key not in spec:
                raise _fail(
                    f"{path}.{key}" if path else key,
                    "one of the fields checked here: " + ", ".join(sorted(spec)),
                    key,
                )
        for key in must:
            if key not in data:
                raise _fail(f"{path}.{key}" if path else key, "a value (required)")
        if one_of and sum(k in data for k in one_of) != 1:
            raise _fail(path, "exactly one of " + ", ".join(one_of))
        return {k: spec[k](f"{path}.{k}" if path else k, v) for k, v in data.items()}

    return check


def _unique(path: str, items: Sequence[Mapping[str, Any]], key: str, what: str) -> None:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = item.get(key)
        if value is None:
            continue
        if value in seen:
            raise _fail(f"{path}[{i}].{key}", f"{what} used once", value)
        seen.add(value)


# --- volumes -----------------------------------------------------------------------------------

_KEY_TO_PATH = _fields(
    {"key": _secret_key, "path": _relative_path(), "mode": _mode}, required=("key", "path")
)


def _key_paths(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = _list(_KEY_TO_PATH)(path, value)
    _unique(path, items, "path", "each path")
    return items


_DOWNWARD_FIELD = re.compile(r"metadata\.(name|namespace|uid|labels|annotations)")
_DOWNWARD_KEYED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


def _downward_field_path(path: str, value: Any) -> str:
    if isinstance(value, str):
        if _DOWNWARD_FIELD.fullmatch(value):
            return value
        keyed = _DOWNWARD_KEYED_FIELD.fullmatch(value)
        if keyed and check_qualified_name(path, keyed.group(2)):
            return value
    raise _fail(
        path,
        "metadata.name, metadata.namespace, metadata.uid, metadata.labels, "
        "metadata.annotations, or metadata.labels['<key>'] / metadata.annotations['<key>']",
        value,
    )


_DOWNWARD_ITEM = _fields(
    {
        "path": _relative_path(),
        "fieldRef": _fields(
            {"fieldPath": _downward_field_path, "apiVersion": _enum("v1")},
            required=("fieldPath",),
        ),
        "mode": _mode,
    },
    required=("path", "fieldRef"),
)


def _downward_items(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = _list(_DOWNWARD_ITEM)(path, value)
    _unique(path, items, "path", "each path")
    return items


_PROJECTION = _fields(
    {
        "configMap": _fields(
            {"name": _dns_subdomain, "items": _key_paths, "optional": _bool}, required=("name",)
        ),
        "secret": _fields(
            {"name": _dns_subdomain, "items": _key_paths, "optional": _bool}, required=("name",)
        ),
        "downwardAPI": _fields({"items": _downward_items}),
        "serviceAccountToken": _fields(
            {
                "path": _relative_path(),
                "audience": _str,
                # The API server's bounds: at least ten minutes, at most 2^32 seconds.
                "expirationSeconds": _int(600, 2**32),
            },
            required=("path",),
        ),
    },
    one_of=("configMap", "secret", "downwardAPI", "serviceAccountToken"),
)


def _projected(path: str, value: Any) -> dict[str, Any]:
    source: dict[str, Any] = _fields(
        {"sources": _list(_PROJECTION), "defaultMode": _mode}, required=("sources",)
    )(path, value)
    seen: set[str] = set()
    for i, projection in enumerate(source["sources"]):
        (kind, body), *_ = projection.items()
        entries = [body] if kind == "serviceAccountToken" else body.get("items", [])
        for j, entry in enumerate(entries):
            where = f"{path}.sources[{i}].{kind}" + (
                "" if kind == "serviceAccountToken" else f".items[{j}]"
            )
            if entry["path"] in seen:
                raise _fail(f"{where}.path", "a path no other projection uses", entry["path"])
            seen.add(entry["path"])
    return source


_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _access_modes(path: str, value: Any) -> list[str]:
    modes: list[str] = _list(_enum(*_ACCESS_MODES), min_items=1)(path, value)
    if len(set(modes)) != len(modes):
        raise _fail(path, "each access mode once")
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        raise _fail(path, "ReadWriteOncePod alone (it excludes the other modes)")
    return modes


_STORAGE = _fields({"storage": _size(positive=True)}, required=("storage",))
_EPHEMERAL = _fields(
    {
        "volumeClaimTemplate": _fields(
            {
                "metadata": _fields(
                    {
                        "labels": _string_map(_qualified, _label_value),
                        "annotations": _string_map(_qualified, _str),
                    }
                ),
                "spec": _fields(
                    {
                        "accessModes": _access_modes,
                        "resources": _fields(
                            {"requests": _STORAGE, "limits": _STORAGE}, required=("requests",)
                        ),
                        "storageClassName": _dns_subdomain,
                        "volumeMode": _enum("Filesystem", "Block"),
                    },
                    required=("accessModes", "resources"),
                ),
            },
            required=("spec",),
        )
    },
    required=("volumeClaimTemplate",),
)


def _csi_driver(path: str, value: Any) -> str:
    # The API server compares the driver name in lower case against the DNS subdomain rule.
    if not isinstance(value, str) or len(value) > 63 or not is_dns_subdomain(value.lower()):
        raise _fail(path, "a CSI driver name: a DNS subdomain of at most 63 characters", value)
    return value


_HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
VOLUME_SOURCES: dict[str, Check] = {
    "emptyDir": _fields({"medium": _enum("", "Memory"), "sizeLimit": _size(positive=False)}),
    "configMap": _fields(
        {"name": _dns_subdomain, "items": _key_paths, "defaultMode": _mode, "optional": _bool},
        required=("name",),
    ),
    "secret": _fields(
        {
            "secretName": _dns_subdomain,
            "items": _key_paths,
            "defaultMode": _mode,
            "optional": _bool,
        },
        required=("secretName",),
    ),
    "persistentVolumeClaim": _fields(
        {"claimName": _dns_subdomain, "readOnly": _bool}, required=("claimName",)
    ),
    "projected": _projected,
    "downwardAPI": _fields({"items": _downward_items, "defaultMode": _mode}),
    "csi": _fields(
        {
            "driver": _csi_driver,
            "readOnly": _bool,
            "fsType": _str,
            "volumeAttributes": _string_map(_nonempty, _str),
            "nodePublishSecretRef": _fields({"name": _dns_subdomain}, required=("name",)),
        },
        required=("driver",),
    ),
    "ephemeral": _EPHEMERAL,
    "hostPath": _fields(
        {"path": _absolute_path, "type": _enum(*_HOST_PATH_TYPES)}, required=("path",)
    ),
    "nfs": _fields(
        {"server": _nonempty, "path": _absolute_path, "readOnly": _bool},
        required=("server", "path"),
    ),
}
_VOLUME = _fields(
    {"name": _dns_label, **VOLUME_SOURCES},
    required=("name",),
    one_of=tuple(VOLUME_SOURCES),
    what="with a name and one volume source",
)


def volume_type(volume: Mapping[str, Any]) -> str:
    """The source of a checked volume (``emptyDir``, ``hostPath``...)."""
    return next(k for k in volume if k != "name")


# --- containers --------------------------------------------------------------------------------

_VOLUME_MOUNT = _fields(
    {
        "name": _nonempty,
        "mountPath": _absolute_path,
        "readOnly": _bool,
        "subPath": _relative_path(allow_empty=True),
        # Bidirectional needs a privileged container; overrides never make the step privileged.
        "mountPropagation": _enum("None", "HostToContainer"),
    },
    required=("name", "mountPath"),
)
_VOLUME_DEVICE = _fields(
    {"name": _nonempty, "devicePath": _absolute_path}, required=("name", "devicePath")
)
_PORT = _fields(
    {
        "containerPort": _port,
        "hostPort": _int(0, 65535),
        "protocol": _enum("TCP", "UDP", "SCTP"),
        "name": _iana_name,
        "hostIP": _ip,
    },
    required=("containerPort",),
)


def _ports(path: str, value: Any) -> list[Any]:
    ports: list[dict[str, Any]] = _list(_PORT)(path, value)
    _unique(path, ports, "name", "each port name")
    return ports


def _mounts(path: str, value: Any) -> list[Any]:
    return list(_list(_VOLUME_MOUNT)(path, value))


def _devices(path: str, value: Any) -> list[Any]:
    devices: list[dict[str, Any]] = _list(_VOLUME_DEVICE)(path, value)
    _unique(path, devices, "name", "each volume")
    _unique(path, devices, "devicePath", "each device path")
    return devices


def _token(path: str, value: Any) -> str:
    if not isinstance(value, str) or _HEADER_NAME.fullmatch(value) is None:
        raise _fail(path, "an HTTP header name", value)
    return value


_HTTP_GET = _fields(
    {
        "path": _str,
        "port": _port_or_name,
        "host": _str,
        "scheme": _enum("HTTP", "HTTPS"),
        "httpHeaders": _list(
            _fields(
                {"name": _token, "value": _str},
                required=("name", "value"),
            )
        ),
    },
    required=("port",),
)


_EXEC = _fields({"command": _list(_str, min_items=1)}, required=("command",))
_TCP_SOCKET = _fields({"port": _port_or_name, "host": _str}, required=("port",))
_GRPC = _fields({"port": _port, "service": _str}, required=("port",))
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _probe(kind: str) -> Check:
    fields: dict[str, Check] = {
        "exec": _EXEC,
        "httpGet": _HTTP_GET,
        "tcpSocket": _TCP_SOCKET,
        "grpc": _GRPC,
        "initialDelaySeconds": _int32,
        "timeoutSeconds": _int32,
        "periodSeconds": _int32,
        "failureThreshold": _int32,
    }
    if kind == "readinessProbe":
        fields["successThreshold"] = _int32
    else:
        # Liveness and startup probes succeed once (0 is defaulted to 1).
        fields["successThreshold"] = _int(0, 1)
        fields["terminationGracePeriodSeconds"] = _int(1, MAX_INT64)
    return _fields(fields, one_of=_PROBE_HANDLERS, what="with one handler")


_SLEEP = _fields({"seconds": _int(0, MAX_INT64)}, required=("seconds",))
_LIFECYCLE_HANDLER = _fields(
    {"exec": _EXEC, "httpGet": _HTTP_GET, "sleep": _SLEEP},
    one_of=("exec", "httpGet", "sleep"),
    what="with one handler (exec, httpGet or sleep)",
)
_LIFECYCLE = _fields({"postStart": _LIFECYCLE_HANDLER, "preStop": _LIFECYCLE_HANDLER})


def _resize_policy(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = _list(
        _fields(
            {
                "resourceName": _enum("cpu", "memory"),
                # The step's pod never restarts (restartPolicy Never): a resize may not either.
                "restartPolicy": _enum("NotRequired"),
            },
            required=("resourceName", "restartPolicy"),
        )
    )(path, value)
    _unique(path, items, "resourceName", "each resource")
    return items


_CONTAINER_FIELDS: dict[str, Check] = {
    "volumeMounts": _mounts,
    "volumeDevices": _devices,
    "workingDir": _str,
    "ports": _ports,
    "lifecycle": _LIFECYCLE,
    "startupProbe": _probe("startupProbe"),
    "livenessProbe": _probe("livenessProbe"),
    "readinessProbe": _probe("readinessProbe"),
    "terminationMessagePath": _absolute_path,
    "terminationMessagePolicy": _enum("File", "FallbackToLogsOnError"),
    "resizePolicy": _resize_policy,
    "stdin": _bool,
    "tty": _bool,
}


def _capabilities(path: str, value: Any) -> list[str]:
    caps: list[str] = _list(_str)(path, value)
    for i, cap in enumerate(caps):
        if _CAPABILITY.fullmatch(cap) is None:
            raise _fail(f"{path}[{i}]", "a capability name such as 'NET_BIND_SERVICE'", cap)
    return caps


def _profile_type(what: str) -> Check:
    def check(path: str, value: Any) -> dict[str, Any]:
        profile: dict[str, Any] = _fields(
            {
                "type": _enum("RuntimeDefault", "Unconfined", "Localhost"),
                "localhostProfile": _nonempty,
            },
            required=("type",),
        )(path, value)
        if (profile["type"] == "Localhost") != ("localhostProfile" in profile):
            raise _fail(
                f"{path}.localhostProfile",
                f"a localhostProfile exactly when the {what} type is Localhost",
            )
        return profile

    return check


_SECURITY_CONTEXT = _fields(
    {
        "privileged": _bool,
        "allowPrivilegeEscalation": _bool,
        "capabilities": _fields({"add": _capabilities, "drop": _capabilities}),
        "runAsUser": _int32,
        "runAsGroup": _int32,
        "runAsNonRoot": _bool,
        "readOnlyRootFilesystem": _bool,
        "seccompProfile": _profile_type("seccomp"),
        "appArmorProfile": _profile_type("AppArmor"),
        "seLinuxOptions": _fields({"user": _str, "role": _str, "type": _str, "level": _str}),
        # Unmasked needs a user namespace (hostUsers false), which overrides cannot set.
        "procMount": _enum("Default"),
    }
)


def _security_context(path: str, value: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = _SECURITY_CONTEXT(path, value)
    if ctx.get("allowPrivilegeEscalation") is False and ctx.get("privileged") is True:
        # The API server's own rule: a privileged container escalates by definition.
        raise _fail(
            f"{path}.privileged", "not privileged when allowPrivilegeEscalation is false", True
        )
    if ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == 0:
        raise _fail(f"{path}.runAsUser", "a non-zero UID when runAsNonRoot is true", 0)
    return ctx


_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _resource_list(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(path, "a mapping of cpu, memory or ephemeral-storage to a quantity")
    for name, amount in value.items():
        where = f"{path}[{name!r}]"
        _enum(*_RESOURCE_NAMES)(where, name)
        check_quantity(where, amount, allow_milli=name == "cpu")
    return dict(value)


def _resources(path: str, value: Any) -> dict[str, Any]:
    res: dict[str, Any] = _fields({"requests": _resource_list, "limits": _resource_list})(
        path, value
    )
    for name, limit in res.get("limits", {}).items():
        request = res.get("requests", {}).get(name)
        if request is not None and check_quantity(path, request) > check_quantity(path, limit):
            raise _fail(f"{path}.requests[{name!r}]", f"at most the limit {limit!r}", request)
    return res


def _init_env(path: str, value: Any) -> list[Any]:
    def entry(where: str, item: Any) -> dict[str, Any]:
        checked: dict[str, Any] = _fields(
            {"name": check_env_name_allowed, "value": _str}, required=("name",)
        )(where, item)
        return checked

    return list(_list(entry)(path, value))


_INIT_CONTAINER = _fields(
    {
        "name": _dns_label,
        "image": _image,
        "imagePullPolicy": _enum("Always", "IfNotPresent", "Never"),
        "command": _list(_str),
        "args": _list(_str),
        "env": _init_env,
        "resources": _resources,
        "securityContext": _security_context,
        # "Always" makes it a sidecar, which may have probes and a lifecycle.
        "restartPolicy": _enum("Always"),
        **_CONTAINER_FIELDS,
    },
    required=("name", "image"),
)


def _init_container(path: str, value: Any) -> dict[str, Any]:
    container: dict[str, Any] = _INIT_CONTAINER(path, value)
    if container.get("restartPolicy") != "Always":
        for key in ("lifecycle", "startupProbe", "livenessProbe", "readinessProbe"):
            if key in container:
                raise _fail(
                    f"{path}.{key}",
                    "no probes nor lifecycle on an init container unless restartPolicy is "
                    "'Always' (a sidecar)",
                    key,
                )
    return container


# --- the pod's own fields ------------------------------------------------------------------------


def _search_domain(path: str, value: Any) -> str:
    if not isinstance(value, str) or not is_dns_subdomain(value.removesuffix(".")):
        raise _fail(path, "a DNS search domain such as 'svc.cluster.local'", value)
    return value


def _dns_config(path: str, value: Any) -> dict[str, Any]:
    config: dict[str, Any] = _fields(
        {
            "nameservers": _list(_ip, max_items=3),
            "searches": _list(_search_domain, max_items=32),
            "options": _list(_fields({"name": _nonempty, "value": _str}, required=("name",))),
        }
    )(path, value)
    if sum(len(s) for s in config.get("searches", [])) + len(config.get("searches", [])) > 2048:
        raise _fail(f"{path}.searches", "search domains of at most 2048 characters in total")
    return config


def _match_expression(path: str, value: Any) -> dict[str, Any]:
    expr: dict[str, Any] = _fields(
        {
            "key": _qualified,
            "operator": _enum("In", "NotIn", "Exists", "DoesNotExist"),
            "values": _list(_label_value),
        },
        required=("key", "operator"),
    )(path, value)
    has_values = bool(expr.get("values"))
    if has_values != (expr["operator"] in ("In", "NotIn")):
        raise _fail(f"{path}.values", "values with In and NotIn, none with Exists, DoesNotExist")
    return expr


_LABEL_SELECTOR = _fields(
    {
        "matchLabels": _string_map(_qualified, _label_value),
        "matchExpressions": _list(_match_expression),
    }
)


def _spread(path: str, value: Any) -> dict[str, Any]:
    constraint: dict[str, Any] = _fields(
        {
            "maxSkew": _int(1, MAX_INT32),
            "topologyKey": _qualified,
            "whenUnsatisfiable": _enum("DoNotSchedule", "ScheduleAnyway"),
            "labelSelector": _LABEL_SELECTOR,
            "minDomains": _int(1, MAX_INT32),
            "nodeAffinityPolicy": _enum("Honor", "Ignore"),
            "nodeTaintsPolicy": _enum("Honor", "Ignore"),
        },
        required=("maxSkew", "topologyKey", "whenUnsatisfiable"),
    )(path, value)
    if "minDomains" in constraint and constraint["whenUnsatisfiable"] != "DoNotSchedule":
        raise _fail(f"{path}.minDomains", "minDomains only with whenUnsatisfiable DoNotSchedule")
    return constraint


def _spreads(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = _list(_spread)(path, value)
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        pair = (item["topologyKey"], item["whenUnsatisfiable"])
        if pair in seen:
            raise _fail(f"{path}[{i}]", "each (topologyKey, whenUnsatisfiable) pair once")
        seen.add(pair)
    return items


def _resource_claims(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = _list(
        _fields(
            {
                "name": _dns_label,
                "resourceClaimName": _dns_subdomain,
                "resourceClaimTemplateName": _dns_subdomain,
            },
            required=("name",),
            one_of=("resourceClaimName", "resourceClaimTemplateName"),
        )
    )(path, value)
    _unique(path, items, "name", "each claim name")
    return items


def _volumes(path: str, value: Any) -> list[Any]:
    volumes: list[dict[str, Any]] = _list(_VOLUME)(path, value)
    _unique(path, volumes, "name", "each volume name")
    return volumes


def _init_containers(path: str, value: Any) -> list[Any]:
    containers: list[dict[str, Any]] = _list(_init_container)(path, value)
    _unique(path, containers, "name", "each container name")
    return containers


_POD_FIELDS: dict[str, Check] = {
    "volumes": _volumes,
    "initContainers": _init_containers,
    "hostAliases": _list(
        _fields(
            {"ip": _ip, "hostnames": _list(_dns_subdomain, min_items=1)},
            required=("ip", "hostnames"),
        )
    ),
    "dnsPolicy": _enum("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"),
    "dnsConfig": _dns_config,
    "topologySpreadConstraints": _spreads,
    "schedulerName": _nonempty,
    "runtimeClassName": _dns_subdomain,
    "enableServiceLinks": _bool,
    "terminationGracePeriodSeconds": _int(0, MAX_INT64),
    "hostNetwork": _bool,
    "hostname": _dns_label,
    "subdomain": _dns_label,
    "shareProcessNamespace": _bool,
    "readinessGates": _list(_fields({"conditionType": _qualified}, required=("conditionType",))),
    "resourceClaims": _resource_claims,
    # Steps run Linux containers; a Windows pod forbids the fields the security profile sets.
    "os": _fields({"name": _enum("linux")}, required=("name",)),
}


# --- shape: run by the settings model -------------------------------------------------------------


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
        expected = _TOP_TYPES[key]
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
    return _check_overrides(value, ALLOWED_POD_SPEC_OVERRIDE_KEYS, _POD_FIELDS)


def check_container_overrides(value: object) -> dict[str, Any]:
    """The checked container overrides (a private JSON copy); errors name ``['key']...``.

    Raises:
        ConfigurationError: If a key is not allowed, or a value is not what the API accepts.
    """
    return _check_overrides(value, ALLOWED_CONTAINER_OVERRIDE_KEYS, _CONTAINER_FIELDS)


# --- fit: run by the validation stage -------------------------------------------------------------

_POD = "settings.pod_spec_overrides"
_CONTAINER = "settings.container_overrides"


def check_overrides_fit(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    restricted: bool,
    builder_volumes: Sequence[str],
    builder_mounts: Sequence[str],
    container_name: str,
    secret_like: Callable[[str, str], bool],
) -> None:
    """Check the overrides against each other, the builder's own fields and the profile.

    Args:
        pod: Checked pod-spec overrides.
        container: Checked container overrides.
        restricted: Whether the Pod Security "restricted" profile applies.
        builder_volumes: Names of the volumes the builder adds (``dshm``).
        builder_mounts: Mount paths the builder gives the step's container (``/dev/shm``).
        container_name: The step's container name.
        secret_like: Whether a plain variable (name, value) of an init container is refused as
            a secret.

    Raises:
        ConfigurationError: Naming the override (``settings.pod_spec_overrides[...]``).
    """
    volumes = list(pod.get("volumes", []))
    for i, volume in enumerate(volumes):
        if volume["name"] in builder_volumes:
            raise ConfigurationError(
                f"{_POD}['volumes'][{i}].name",
                "a name not used already (" + ", ".join(sorted(builder_volumes)) + ")",
                volume["name"],
            )
    kinds = {v["name"]: volume_type(v) for v in volumes}
    kinds.update(dict.fromkeys(builder_volumes, "emptyDir"))

    paths = [*builder_mounts, *(m["mountPath"] for m in container.get("volumeMounts", []))]
    duplicated = sorted({p for p in paths if paths.count(p) > 1})
    if duplicated:
        raise ConfigurationError(
            f"{_CONTAINER}['volumeMounts']",
            "each mountPath once (/dev/shm is taken when shm_size is set)",
            duplicated[0],
        )
    _check_container_volumes(f"{_CONTAINER}", container, kinds)

    init_containers = list(pod.get("initContainers", []))
    for i, init in enumerate(init_containers):
        where = f"{_POD}['initContainers'][{i}]"
        if init["name"] == container_name:
            raise ConfigurationError(
                f"{where}.name",
                f"a name other than the step's container {container_name!r}",
                init["name"],
            )
        mounts = [m["mountPath"] for m in init.get("volumeMounts", [])]
        for j, mount in enumerate(mounts):
            if mounts.index(mount) != j:
                raise ConfigurationError(
                    f"{where}.volumeMounts[{j}].mountPath", "each mountPath once", mount
                )
        _check_container_volumes(where, init, kinds)
        for j, env in enumerate(init.get("env", [])):
            if secret_like(env["name"], env.get("value", "")):
                raise ConfigurationError(f"{where}.env[{j}]", _SECRET_LIKE_INIT, None)

    _check_ports(pod, container, init_containers)
    _check_sleeps(pod, container, init_containers)
    if pod.get("dnsPolicy") == "None" and not pod.get("dnsConfig", {}).get("nameservers"):
        raise ConfigurationError(
            f"{_POD}['dnsConfig']", "nameservers when dnsPolicy is 'None'", None
        )
    if restricted:
        _check_restricted(pod, container, volumes, init_containers)


_SECRET_LIKE_INIT = (
    "a non-secret variable: an init container gets secrets through a volume of a Secret, or set "
    "allow_secret_like_env"
)


def _check_container_volumes(
    where: str, container: Mapping[str, Any], kinds: Mapping[str, str]
) -> None:
    key = "['volumeMounts']" if where == _CONTAINER else ".volumeMounts"
    mounted = set()
    for j, mount in enumerate(container.get("volumeMounts", [])):
        if mount["name"] not in kinds:
            raise ConfigurationError(
                f"{where}{key}[{j}].name",
                "the name of a volume of the pod (" + ", ".join(sorted(kinds)) + ")",
                mount["name"],
            )
        mounted.add(mount["name"])
    key = "['volumeDevices']" if where == _CONTAINER else ".volumeDevices"
    for j, device in enumerate(container.get("volumeDevices", [])):
        if kinds.get(device["name"]) not in ("persistentVolumeClaim", "ephemeral"):
            raise ConfigurationError(
                f"{where}{key}[{j}].name",
                "the name of a persistentVolumeClaim or ephemeral volume of the pod",
                device["name"],
            )
        if device["name"] in mounted:
            raise ConfigurationError(
                f"{where}{key}[{j}].name",
                "a volume not also mounted by this container",
                device["name"],
            )


def _containers(
    container: Mapping[str, Any], init_containers: Sequence[Mapping[str, Any]]
) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (_CONTAINER, container),
        *((f"{_POD}['initContainers'][{i}]", c) for i, c in enumerate(init_containers)),
    ]


def _check_ports(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    init_containers: Sequence[Mapping[str, Any]],
) -> None:
    host_network = pod.get("hostNetwork") is True
    taken: set[tuple[str, int, str]] = set()
    for where, c in _containers(container, init_containers):
        key = "['ports']" if where == _CONTAINER else ".ports"
        for j, port in enumerate(c.get("ports", [])):
            host_port = port.get("hostPort", 0)
            if host_network:
                # On the host's network the container port is the host port.
                if host_port not in (0, port["containerPort"]):
                    raise ConfigurationError(
                        f"{where}{key}[{j}].hostPort",
                        "the containerPort, or no hostPort, when hostNetwork is true",
                        host_port,
                    )
                host_port = port["containerPort"]
            if host_port:
                taken_key = (port.get("hostIP", ""), host_port, port.get("protocol", "TCP"))
                if taken_key in taken:
                    raise ConfigurationError(
                        f"{where}{key}[{j}]",
                        "a host port no other container of the pod uses",
                        host_port,
                    )
                taken.add(taken_key)


def _check_sleeps(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    init_containers: Sequence[Mapping[str, Any]],
) -> None:
    grace = pod.get("terminationGracePeriodSeconds", _DEFAULT_GRACE_SECONDS)
    for where, c in _containers(container, init_containers):
        key = "['lifecycle']" if where == _CONTAINER else ".lifecycle"
        for hook, handler in c.get("lifecycle", {}).items():
            seconds = handler.get("sleep", {}).get("seconds")
            if seconds is not None and seconds > grace:
                raise ConfigurationError(
                    f"{where}{key}.{hook}.sleep.seconds",
                    f"at most the pod's terminationGracePeriodSeconds ({grace})",
                    seconds,
                )


def _restricted_refusal(field: str, what: str, value: Any = None) -> ConfigurationError:
    return ConfigurationError(
        field,
        f"{what} under pod_security_profile 'restricted' (drop the field, or set "
        f"{_NONE_PROFILE} where the namespace allows it)",
        value if isinstance(value, str | int | bool) else None,
    )


def _check_restricted(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    volumes: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
) -> None:
    if pod.get("hostNetwork"):
        raise ConfigurationError(
            f"{_POD}['hostNetwork']", f"hostNetwork only with {_NONE_PROFILE}", True
        )
    for i, volume in enumerate(volumes):
        kind = volume_type(volume)
        if kind not in RESTRICTED_VOLUME_TYPES:
            raise _restricted_refusal(
                f"{_POD}['volumes'][{i}].{kind}",
                "a volume type of " + ", ".join(sorted(RESTRICTED_VOLUME_TYPES)),
                kind,
            )
    for where, c in _containers(container, init_containers):
        key = "['ports']" if where == _CONTAINER else ".ports"
        for j, port in enumerate(c.get("ports", [])):
            if port.get("hostPort"):
                raise _restricted_refusal(
                    f"{where}{key}[{j}].hostPort", "no hostPort", port["hostPort"]
                )
    for i, init in enumerate(init_containers):
        where = f"{_POD}['initContainers'][{i}].securityContext"
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


# --- apply: run by the assembler --------------------------------------------------------------


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
