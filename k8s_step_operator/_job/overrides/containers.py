"""The container fields an override may set, and the init containers it may add.

``CONTAINER_FIELDS`` is what ``container_overrides`` may set on the step's container; an init
container has those and the fields of a container of its own (image, command, environment,
resources, security context), since the builder writes nothing for it.
"""

from __future__ import annotations

import re
from typing import Any

from k8s_step_operator._job.env import check_env_name_allowed
from k8s_step_operator._job.kube_syntax import MAX_INT64
from k8s_step_operator._job.overrides.checkers import (
    Check,
    absolute_path,
    boolean,
    choice,
    dns_label,
    fail,
    fields,
    image,
    int32,
    integer,
    ip_address,
    list_of,
    nonempty,
    port,
    port_name,
    port_or_name,
    relative_path,
    string,
    unique,
)
from k8s_step_operator._job.quantity import check_quantity, parse_quantity
from k8s_step_operator._step_operator_api.sizes import check_size

__all__ = ["CONTAINER_FIELDS", "init_container_list"]

_HEADER_NAME = re.compile(r"[-A-Za-z0-9!#$%&'*+.^_`|~]+")
_CAPABILITY = re.compile(r"[A-Za-z0-9_]+")


_VOLUME_MOUNT = fields(
    {
        "name": nonempty,
        "mountPath": absolute_path,
        "readOnly": boolean,
        "subPath": relative_path(allow_empty=True),
        # Bidirectional needs a privileged container; overrides never make the step privileged.
        "mountPropagation": choice("None", "HostToContainer"),
    },
    required=("name", "mountPath"),
)
_VOLUME_DEVICE = fields(
    {"name": nonempty, "devicePath": absolute_path}, required=("name", "devicePath")
)
_PORT = fields(
    {
        "containerPort": port,
        "hostPort": integer(0, 65535),
        "protocol": choice("TCP", "UDP", "SCTP"),
        "name": port_name,
        "hostIP": ip_address,
    },
    required=("containerPort",),
)


def _ports(path: str, value: Any) -> list[Any]:
    ports: list[dict[str, Any]] = list_of(_PORT)(path, value)
    unique(path, ports, "name", "each port name")
    return ports


def _mounts(path: str, value: Any) -> list[Any]:
    return list(list_of(_VOLUME_MOUNT)(path, value))


def _devices(path: str, value: Any) -> list[Any]:
    devices: list[dict[str, Any]] = list_of(_VOLUME_DEVICE)(path, value)
    unique(path, devices, "name", "each volume")
    unique(path, devices, "devicePath", "each device path")
    return devices


def _token(path: str, value: Any) -> str:
    if not isinstance(value, str) or _HEADER_NAME.fullmatch(value) is None:
        raise fail(path, "an HTTP header name", value)
    return value


_HTTP_GET = fields(
    {
        "path": string,
        "port": port_or_name,
        "host": string,
        "scheme": choice("HTTP", "HTTPS"),
        "httpHeaders": list_of(
            fields(
                {"name": _token, "value": string},
                required=("name", "value"),
            )
        ),
    },
    required=("port",),
)


_EXEC = fields({"command": list_of(string, min_items=1)}, required=("command",))
_TCP_SOCKET = fields({"port": port_or_name, "host": string}, required=("port",))
_GRPC = fields({"port": port, "service": string}, required=("port",))
_PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _probe(kind: str) -> Check:
    checks: dict[str, Check] = {
        "exec": _EXEC,
        "httpGet": _HTTP_GET,
        "tcpSocket": _TCP_SOCKET,
        "grpc": _GRPC,
        "initialDelaySeconds": int32,
        "timeoutSeconds": int32,
        "periodSeconds": int32,
        "failureThreshold": int32,
    }
    if kind == "readinessProbe":
        checks["successThreshold"] = int32
    else:
        # Liveness and startup probes succeed once (0 is defaulted to 1).
        checks["successThreshold"] = integer(0, 1)
        checks["terminationGracePeriodSeconds"] = integer(1, MAX_INT64)
    return fields(checks, one_of=_PROBE_HANDLERS, what="with one handler")


_SLEEP = fields({"seconds": integer(0, MAX_INT64)}, required=("seconds",))
_LIFECYCLE_HANDLER = fields(
    {"exec": _EXEC, "httpGet": _HTTP_GET, "sleep": _SLEEP},
    one_of=("exec", "httpGet", "sleep"),
    what="with one handler (exec, httpGet or sleep)",
)
_LIFECYCLE = fields({"postStart": _LIFECYCLE_HANDLER, "preStop": _LIFECYCLE_HANDLER})


def _resize_policy(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = list_of(
        fields(
            {
                "resourceName": choice("cpu", "memory"),
                # The step's pod never restarts (restartPolicy Never): a resize may not either.
                "restartPolicy": choice("NotRequired"),
            },
            required=("resourceName", "restartPolicy"),
        )
    )(path, value)
    unique(path, items, "resourceName", "each resource")
    return items


CONTAINER_FIELDS: dict[str, Check] = {
    "volumeMounts": _mounts,
    "volumeDevices": _devices,
    "workingDir": string,
    "ports": _ports,
    "lifecycle": _LIFECYCLE,
    "startupProbe": _probe("startupProbe"),
    "livenessProbe": _probe("livenessProbe"),
    "readinessProbe": _probe("readinessProbe"),
    "terminationMessagePath": absolute_path,
    "terminationMessagePolicy": choice("File", "FallbackToLogsOnError"),
    "resizePolicy": _resize_policy,
    "stdin": boolean,
    "tty": boolean,
}


def _capabilities(path: str, value: Any) -> list[str]:
    caps: list[str] = list_of(string)(path, value)
    for i, cap in enumerate(caps):
        if _CAPABILITY.fullmatch(cap) is None:
            raise fail(f"{path}[{i}]", "a capability name such as 'NET_BIND_SERVICE'", cap)
    return caps


def _profile_type(what: str) -> Check:
    def check(path: str, value: Any) -> dict[str, Any]:
        profile: dict[str, Any] = fields(
            {
                "type": choice("RuntimeDefault", "Unconfined", "Localhost"),
                "localhostProfile": nonempty,
            },
            required=("type",),
        )(path, value)
        if (profile["type"] == "Localhost") != ("localhostProfile" in profile):
            raise fail(
                f"{path}.localhostProfile",
                f"a localhostProfile exactly when the {what} type is Localhost",
            )
        return profile

    return check


_SECURITY_CONTEXT = fields(
    {
        "privileged": boolean,
        "allowPrivilegeEscalation": boolean,
        "capabilities": fields({"add": _capabilities, "drop": _capabilities}),
        "runAsUser": int32,
        "runAsGroup": int32,
        "runAsNonRoot": boolean,
        "readOnlyRootFilesystem": boolean,
        "seccompProfile": _profile_type("seccomp"),
        "appArmorProfile": _profile_type("AppArmor"),
        "seLinuxOptions": fields({"user": string, "role": string, "type": string, "level": string}),
        # Unmasked needs a user namespace (hostUsers false), which overrides cannot set.
        "procMount": choice("Default"),
    }
)


def _security_context(path: str, value: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = _SECURITY_CONTEXT(path, value)
    if ctx.get("allowPrivilegeEscalation") is False and ctx.get("privileged") is True:
        # The API server's own rule: a privileged container escalates by definition.
        raise fail(
            f"{path}.privileged", "not privileged when allowPrivilegeEscalation is false", True
        )
    if ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == 0:
        raise fail(f"{path}.runAsUser", "a non-zero UID when runAsNonRoot is true", 0)
    return ctx


_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _resource_list(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail(path, "a mapping of cpu, memory or ephemeral-storage to a quantity")
    checked: dict[str, str] = {}
    for name, amount in value.items():
        where = f"{path}[{name!r}]"
        choice(*_RESOURCE_NAMES)(where, name)
        if name == "cpu":
            check_quantity(where, amount)
            checked[name] = amount
        else:
            # Bytes: read like every size (16Gi or 16GiB), written as Kubernetes' quantity.
            checked[name] = check_size(where, amount, positive=False).quantity
    return checked


def _resources(path: str, value: Any) -> dict[str, Any]:
    res: dict[str, Any] = fields({"requests": _resource_list, "limits": _resource_list})(
        path, value
    )
    for name, limit in res.get("limits", {}).items():
        request = res.get("requests", {}).get(name)
        if request is not None and parse_quantity(request) > parse_quantity(limit):
            raise fail(f"{path}.requests[{name!r}]", f"at most the limit {limit!r}", request)
    return res


def _init_env(path: str, value: Any) -> list[Any]:
    def entry(where: str, item: Any) -> dict[str, Any]:
        checked: dict[str, Any] = fields(
            {"name": check_env_name_allowed, "value": string}, required=("name",)
        )(where, item)
        return checked

    return list(list_of(entry)(path, value))


_INIT_CONTAINER = fields(
    {
        "name": dns_label,
        "image": image,
        "imagePullPolicy": choice("Always", "IfNotPresent", "Never"),
        "command": list_of(string),
        "args": list_of(string),
        "env": _init_env,
        "resources": _resources,
        "securityContext": _security_context,
        # "Always" makes it a sidecar, which may have probes and a lifecycle.
        "restartPolicy": choice("Always"),
        **CONTAINER_FIELDS,
    },
    required=("name", "image"),
)


def _init_container(path: str, value: Any) -> dict[str, Any]:
    container: dict[str, Any] = _INIT_CONTAINER(path, value)
    if container.get("restartPolicy") != "Always":
        for key in ("lifecycle", "startupProbe", "livenessProbe", "readinessProbe"):
            if key in container:
                raise fail(
                    f"{path}.{key}",
                    "no probes nor lifecycle on an init container unless restartPolicy is "
                    "'Always' (a sidecar)",
                    key,
                )
    return container


def init_container_list(path: str, value: Any) -> list[Any]:
    """The pod's init containers: each checked, each name once."""
    containers: list[dict[str, Any]] = list_of(_init_container)(path, value)
    unique(path, containers, "name", "each container name")
    return containers
