"""The fit stage, run by the validation stage: overrides against everything else.

Each override was checked on its own by the shape stage; what is left depends on other settings
or on the fields the builder sets itself. Volume and container names must not collide with ours;
mounts must name a volume; a host port must be unique; a ``sleep`` must end within the grace
period; and, under the restricted profile, nothing may contradict it (``restricted``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.overrides.allowed import CONTAINER, POD, named_containers
from k8s_step_operator._job.overrides.restricted import check_restricted
from k8s_step_operator._job.overrides.volumes import volume_type

__all__ = ["check_overrides_fit"]

_DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds


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
                f"{POD}['volumes'][{i}].name",
                "a name not used already (" + ", ".join(sorted(builder_volumes)) + ")",
                volume["name"],
            )
    kinds = {v["name"]: volume_type(v) for v in volumes}
    kinds.update(dict.fromkeys(builder_volumes, "emptyDir"))

    paths = [*builder_mounts, *(m["mountPath"] for m in container.get("volumeMounts", []))]
    duplicated = sorted({p for p in paths if paths.count(p) > 1})
    if duplicated:
        raise ConfigurationError(
            f"{CONTAINER}['volumeMounts']",
            "each mountPath once (/dev/shm is taken when shm_size is set)",
            duplicated[0],
        )
    _check_container_volumes(f"{CONTAINER}", container, kinds)

    init_containers = list(pod.get("initContainers", []))
    for i, init in enumerate(init_containers):
        where = f"{POD}['initContainers'][{i}]"
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
            f"{POD}['dnsConfig']", "nameservers when dnsPolicy is 'None'", None
        )
    if restricted:
        check_restricted(pod, container, volumes, init_containers)


_SECRET_LIKE_INIT = (
    "a non-secret variable: an init container gets secrets through a volume of a Secret, or set "
    "allow_secret_like_env"
)


def _check_container_volumes(
    where: str, container: Mapping[str, Any], kinds: Mapping[str, str]
) -> None:
    key = "['volumeMounts']" if where == CONTAINER else ".volumeMounts"
    mounted = set()
    for j, mount in enumerate(container.get("volumeMounts", [])):
        if mount["name"] not in kinds:
            raise ConfigurationError(
                f"{where}{key}[{j}].name",
                "the name of a volume of the pod (" + ", ".join(sorted(kinds)) + ")",
                mount["name"],
            )
        mounted.add(mount["name"])
    key = "['volumeDevices']" if where == CONTAINER else ".volumeDevices"
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


def _check_ports(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    init_containers: Sequence[Mapping[str, Any]],
) -> None:
    host_network = pod.get("hostNetwork") is True
    taken: set[tuple[str, int, str]] = set()
    for where, c in named_containers(container, init_containers):
        key = "['ports']" if where == CONTAINER else ".ports"
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
    for where, c in named_containers(container, init_containers):
        key = "['lifecycle']" if where == CONTAINER else ".lifecycle"
        for hook, handler in c.get("lifecycle", {}).items():
            seconds = handler.get("sleep", {}).get("seconds")
            if seconds is not None and seconds > grace:
                raise ConfigurationError(
                    f"{where}{key}.{hook}.sleep.seconds",
                    f"at most the pod's terminationGracePeriodSeconds ({grace})",
                    seconds,
                )
