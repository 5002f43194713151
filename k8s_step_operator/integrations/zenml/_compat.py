"""ZenML's own ``kubernetes`` step operator settings, translated into this operator's.

A team switching from ZenML's ``kubernetes`` step operator keeps its pipelines: the settings
its steps carry (``KubernetesStepOperatorSettings``: ``pod_settings``, ``service_account_name``,
``privileged``, ``pod_count`` (``num_nodes``), ``ttl_seconds_after_finished``,
``active_deadline_seconds`` ...) are accepted under the same names and turned into the core's
fields here. What this operator cannot honour, or refuses on purpose, is refused under ZenML's
name, saying what to use instead; nothing is dropped. A value equal to ZenML's own default asks
for nothing and passes (ZenML's settings objects carry every field, set or not).

The translation is pure: ZenML-named values in, the core's field values out, plus where each
came from (``origins``), so that an error the core raises later about a translated value is
reported under the name the user wrote (``rename``). Nothing here imports ZenML.

How ``pod_settings`` maps:

==============================  ==========================================================
ZenML                           here
==============================  ==========================================================
node_selectors                  node_selector (merged; a key set twice must agree)
affinity                        affinity
tolerations                     tolerations (appended)
resources                       requests and limits: cpu -> ResourceSettings.cpu_count
                                (a limit equal to it -> cpu_limit), memory -> memory
                                (request and limit are one value here), one accelerator
                                -> gpu_count and gpu_vendor (nvidia.com/mig-<p> -> mig_profile)
annotations, labels             pod_annotations, pod_labels (merged)
volumes, volume_mounts          pod_spec_overrides.volumes, container_overrides.volumeMounts
scheduler_name                  pod_spec_overrides.schedulerName
image_pull_secrets              image_pull_secrets
env                             env (a value), secret_env (valueFrom.secretKeyRef)
env_from                        secret_env_from (secretRef)
container_security_context      run_as_user, run_as_group; what the restricted profile
                                sets anyway is accepted under it
additional_pod_spec_args        the pod-spec fields pod_spec_overrides takes, and
                                priority_class_name, node_selector, tolerations, affinity,
                                service_account_name, image_pull_secrets, security_context
                                (runAsUser, runAsGroup, fsGroup)
==============================  ==========================================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from k8s_step_operator import ByteUnit, ConfigurationError
from k8s_step_operator._job.overrides.allowed import ALLOWED_POD_SPEC_OVERRIDE_KEYS
from k8s_step_operator._job.quantity import parse_quantity

__all__ = [
    "POD_SETTINGS_DEFAULTS",
    "ZENML_DEFAULTS",
    "ZENML_FIELDS",
    "ZENML_FIELDS_SET",
    "Translation",
    "as_plain",
    "memory_bytes",
    "parse_json",
    "rename",
    "translate",
]

# ZenML's container waiting reasons that fail its step at once; ours fail on the same ones,
# after image_pull_backoff_timeout (image errors) or missing_config_grace (a missing Secret).
_DEFAULT_WAITING_REASONS = (
    "InvalidImageName",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
)
# The fields of ZenML's KubernetesStepOperatorSettings that the core has no field of its own
# for, with ZenML's defaults (service_account_name, ttl_seconds_after_finished and
# active_deadline_seconds are the core's own fields, with the same meaning).
ZENML_DEFAULTS: Mapping[str, Any] = {
    "pod_settings": None,
    "pod_count": 1,
    "privileged": False,
    "job_name_prefix": None,
    "fail_on_container_waiting_reasons": list(_DEFAULT_WAITING_REASONS),
    "api_request_timeout": None,
    "max_api_retries": 3,
    "pod_startup_timeout": None,
    "pod_failure_max_retries": None,
    "pod_failure_retry_delay": None,
    "pod_failure_backoff": None,
}
ZENML_FIELDS = tuple(ZENML_DEFAULTS)
ZENML_FIELDS_SET = frozenset(ZENML_FIELDS)
# KubernetesPodSettings' fields and defaults.
POD_SETTINGS_DEFAULTS: Mapping[str, Any] = {
    "node_selectors": {},
    "affinity": {},
    "tolerations": [],
    "resources": {},
    "annotations": {},
    "volumes": [],
    "volume_mounts": [],
    "host_ipc": False,
    "scheduler_name": None,
    "image_pull_secrets": [],
    "labels": {},
    "env": [],
    "env_from": [],
    "container_security_context": {},
    "additional_pod_spec_args": {},
}

# Why each top-level field ZenML has and this operator does not honour is refused, and what to
# use instead.
_REFUSED = {
    "privileged": (
        "False: k8s-step-operator never runs a privileged container (the 'restricted' Pod "
        "Security profile forbids it, and no setting here can make one); GPUs need no "
        "privilege: ask for them with ResourceSettings(gpu_count=N), and use shm_size for "
        "shared memory"
    ),
    "job_name_prefix": (
        "None: a Job's name here is derived from its run, step and step run, so that a "
        "restarted caller finds its Job; tag Jobs with labels={...} instead"
    ),
    "fail_on_container_waiting_reasons": (
        f"ZenML's default {list(_DEFAULT_WAITING_REASONS)}: those reasons fail the step here "
        "too, after image_pull_backoff_timeout (image errors) and missing_config_grace (a "
        "missing Secret or ConfigMap); set those two instead"
    ),
    "api_request_timeout": (
        "None: API calls here have their own time-outs and retry with back-off, and the step "
        "is watched, not polled; bound the step's phases with pending_timeout, "
        "queue_timeout and active_deadline_seconds instead"
    ),
    "max_api_retries": (
        "3 (ZenML's default): API calls here retry with back-off within a time budget of "
        "their own; bound the step's phases with pending_timeout, queue_timeout and "
        "active_deadline_seconds instead"
    ),
    "pod_startup_timeout": "None (unused by ZenML's operator too): use pending_timeout",
    "pod_failure_max_retries": (
        "None (unused by ZenML's operator too): use the step's retry=StepRetryConfig(...), or "
        "backoff_limit"
    ),
    "pod_failure_retry_delay": (
        "None (unused by ZenML's operator too): use the step's retry=StepRetryConfig(delay=...)"
    ),
    "pod_failure_backoff": (
        "None (unused by ZenML's operator too): use the step's retry=StepRetryConfig(backoff=...)"
    ),
}
_POD_COUNT = "the same number as num_nodes, or only one of the two"
# The container security context fields the restricted profile sets itself, with the value it
# sets: asking for the same is asking for nothing more.
_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "privileged": False,
}
# The pod security context fields the restricted profile sets itself.
_POD_RESTRICTED = frozenset({"runAsNonRoot", "seccompProfile"})
# Pod-spec attributes ZenML's additional_pod_spec_args may name (snake_case) that map onto the
# core's own fields.
_POD_ARG_FIELDS = {
    "priority_class_name": "priority_class_name",
    "service_account_name": "service_account_name",
}
_ACCELERATOR = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$")
_MIG = re.compile(r"^nvidia\.com/mig-(.+)$")
_VENDORS = {"nvidia.com/gpu": "nvidia", "amd.com/gpu": "amd", "gpu.intel.com/i915": "intel"}


@dataclass
class Translation:
    """The core's field values for ZenML-named ones, and where each came from.

    Attributes:
        settings: The core's settings fields, merged with what the step set in the core's own
            names.
        resources: ``cpu_count``, ``memory`` and ``gpu_count`` read from
            ``pod_settings.resources``, to be merged with ZenML's ``ResourceSettings``.
        origins: ``(core field, ZenML field)`` pairs, most specific first: an error about the
            core field (or something inside it) is reported under the ZenML name.
    """

    settings: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)
    origins: list[tuple[str, str]] = field(default_factory=list)

    def came_from(self, core: str, zenml: str) -> None:
        """Record that the core's field ``core`` was written from ZenML's ``zenml``."""
        self.origins.append((core, zenml))


def as_plain(value: Any) -> Any:
    """``value`` as JSON-like data: Kubernetes client models and pydantic models as dicts.

    Kubernetes models become dicts with the API's camelCase names (as ZenML serializes them);
    ``None`` values are dropped at every depth, since they mean "not set" to the API.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "attribute_map") and hasattr(value, "openapi_types"):
        names: Mapping[str, str] = value.attribute_map
        return {
            names[attr]: as_plain(getattr(value, attr))
            for attr in value.openapi_types
            if getattr(value, attr) is not None
        }
    if hasattr(value, "model_dump"):
        return as_plain(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): as_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [as_plain(v) for v in value]
    return value


def parse_json(value: Any) -> Any:
    """JSON text decoded (``zenml step-operator register --pod_settings='{...}'``), else as is."""
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def translate(data: Mapping[str, Any]) -> Translation:
    """Translate the ZenML-named fields of ``data`` into the core's, merged with the rest.

    Args:
        data: Settings fields as set: the core's own and ZenML's (``ZENML_FIELDS``).

    Returns:
        The core's settings (ZenML's fields removed), resources and the origins of each value.

    Raises:
        ConfigurationError: Naming ZenML's field, for a value this operator does not honour.
    """
    out = Translation(settings={k: v for k, v in data.items() if k not in ZENML_DEFAULTS})
    for name, default in ZENML_DEFAULTS.items():
        if name == "pod_settings" or name not in data:
            continue
        value = parse_json(data[name])
        if name == "pod_count":
            _pod_count(value, data, out)
        elif value != default:
            raise ConfigurationError(name, _REFUSED[name], value)
    pod = parse_json(data.get("pod_settings"))
    if pod is not None:
        _pod_settings(as_plain(pod), out)
    return out


def _pod_count(value: Any, data: Mapping[str, Any], out: Translation) -> None:
    """ZenML's ``pod_count`` (a step on several pods) is the core's ``num_nodes``.

    ZenML runs such a step as one Job of ``pod_count`` pods with its distributed environment;
    ours is the same Job as an Indexed Job with torchrun's environment, for command and Python
    steps alike. ZenML's default (1) asks for nothing.
    """
    if value == 1:
        return
    ours = data.get("num_nodes")
    if ours not in (None, 1) and ours != value:
        raise ConfigurationError("pod_count", _POD_COUNT, value)
    out.settings["num_nodes"] = value
    out.came_from("num_nodes", "pod_count")


# -- pod_settings ---------------------------------------------------------------------------------


def _pod_settings(pod: Any, out: Translation) -> None:
    if not isinstance(pod, Mapping):
        raise ConfigurationError(
            "pod_settings", "a KubernetesPodSettings object or a mapping of its fields", pod
        )
    unknown = sorted(set(pod) - set(POD_SETTINGS_DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"pod_settings.{unknown[0]}",
            "a field of ZenML's KubernetesPodSettings: " + ", ".join(POD_SETTINGS_DEFAULTS),
            None,
        )
    s = out.settings
    security = pod.get("container_security_context") or {}
    if security.get("privileged"):
        raise ConfigurationError(
            "pod_settings.container_security_context.privileged", _REFUSED["privileged"], True
        )
    if pod.get("host_ipc"):
        raise ConfigurationError(
            "pod_settings.host_ipc",
            "False: hostIPC shares the node's IPC namespace with the step, which the "
            "'restricted' Pod Security profile forbids and k8s-step-operator never sets; for "
            "memory shared between the step's processes use shm_size",
            True,
        )
    _merge_map(s, "node_selector", pod.get("node_selectors"), "pod_settings.node_selectors", out)
    if pod.get("affinity"):
        _set_once(s, "affinity", pod["affinity"], "pod_settings.affinity", out)
    _tolerations(s, pod.get("tolerations") or [], "pod_settings.tolerations", out)
    _resources(pod.get("resources") or {}, out)
    _merge_map(s, "pod_annotations", pod.get("annotations"), "pod_settings.annotations", out)
    _merge_map(s, "pod_labels", pod.get("labels"), "pod_settings.labels", out)
    _append(
        s,
        "pod_spec_overrides",
        "volumes",
        pod.get("volumes") or [],
        "pod_settings.volumes",
        out,
    )
    _append(
        s,
        "container_overrides",
        "volumeMounts",
        pod.get("volume_mounts") or [],
        "pod_settings.volume_mounts",
        out,
    )
    if pod.get("scheduler_name"):
        _override(
            s,
            "pod_spec_overrides",
            "schedulerName",
            pod["scheduler_name"],
            "pod_settings.scheduler_name",
            out,
        )
    _pull_secrets(s, pod.get("image_pull_secrets") or [], "pod_settings.image_pull_secrets", out)
    _env(s, pod.get("env") or [], out)
    _env_from(s, pod.get("env_from") or [], out)
    _container_security(s, security, out)
    _pod_spec_args(s, pod.get("additional_pod_spec_args") or {}, out)


def _key(name: str) -> str:
    return f"[{name!r}]"


def _merge_map(s: dict[str, Any], target: str, values: Any, zenml: str, out: Translation) -> None:
    if not values:
        return
    if not isinstance(values, Mapping):
        raise ConfigurationError(zenml, "a mapping", values)
    merged = dict(s.get(target) or {})
    for k, v in values.items():
        if k in merged and merged[k] != v:
            raise ConfigurationError(
                f"{zenml}{_key(k)}",
                f"the value {target}{_key(k)} has ({merged[k]!r}), or only one of the two",
                v,
            )
        merged[k] = v
        out.came_from(f"settings.{target}{_key(k)}", f"{zenml}{_key(k)}")
    s[target] = merged


def _set_once(s: dict[str, Any], target: str, value: Any, zenml: str, out: Translation) -> None:
    if s.get(target) not in (None, {}, [], value):
        raise ConfigurationError(zenml, f"only one of {zenml} and {target}", None)
    s[target] = value
    out.came_from(f"settings.{target}", zenml)


def _tolerations(s: dict[str, Any], values: Any, zenml: str, out: Translation) -> None:
    if not values:
        return
    if not isinstance(values, list):
        raise ConfigurationError(zenml, "a list of tolerations", values)
    existing = list(s.get("tolerations") or [])
    base = len(existing)
    names = {"tolerationSeconds": "toleration_seconds"}
    for i, t in enumerate(values):
        if not isinstance(t, Mapping):
            raise ConfigurationError(f"{zenml}[{i}]", "a toleration (key, operator, ...)", t)
        existing.append({names.get(k, k): v for k, v in t.items() if v is not None})
        out.came_from(f"settings.tolerations[{base + i}]", f"{zenml}[{i}]")
    s["tolerations"] = existing


def _append(
    s: dict[str, Any], target: str, key: str, values: Any, zenml: str, out: Translation
) -> None:
    if not values:
        return
    if not isinstance(values, list):
        raise ConfigurationError(zenml, "a list", values)
    overrides = dict(s.get(target) or {})
    existing = list(overrides.get(key) or [])
    base = len(existing)
    existing.extend(values)
    overrides[key] = existing
    s[target] = overrides
    for i in range(len(values)):
        out.came_from(f"settings.{target}{_key(key)}[{base + i}]", f"{zenml}[{i}]")


def _override(
    s: dict[str, Any], target: str, key: str, value: Any, zenml: str, out: Translation
) -> None:
    overrides = dict(s.get(target) or {})
    if key in overrides and overrides[key] != value:
        raise ConfigurationError(zenml, f"only one of {zenml} and {target}{_key(key)}", value)
    overrides[key] = value
    s[target] = overrides
    out.came_from(f"settings.{target}{_key(key)}", zenml)


def _pull_secrets(s: dict[str, Any], values: Any, zenml: str, out: Translation) -> None:
    if not values:
        return
    if not isinstance(values, list):
        raise ConfigurationError(zenml, "a list of Secret names", values)
    existing = list(s.get("image_pull_secrets") or [])
    for i, v in enumerate(values):
        name = v.get("name") if isinstance(v, Mapping) else v
        if name in existing:
            continue
        out.came_from(f"settings.image_pull_secrets[{len(existing)}]", f"{zenml}[{i}]")
        existing.append(name)
    s["image_pull_secrets"] = existing


def _same(s: dict[str, Any], target: str, value: Any, zenml: str, out: Translation) -> None:
    if s.get(target) is not None and s[target] != value:
        raise ConfigurationError(zenml, f"the value {target} has ({s[target]!r})", value)
    s[target] = value
    out.came_from(f"settings.{target}", zenml)


# -- resources ---------------------------------------------------------------------------------


def _quantity(field: str, value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except ValueError as e:
        raise ConfigurationError(
            field, "a Kubernetes quantity such as '2', '500m' or '4Gi'", value
        ) from e


def memory_bytes(text: str) -> int | None:
    """The bytes a ZenML memory size (``4GiB``, ``512MB``, ``100B``) stands for, else None."""
    m = re.fullmatch(r"([0-9]+)([A-Za-z]+)", text.strip()) if isinstance(text, str) else None
    units = {u.value: u.byte_value for u in ByteUnit}
    if m is None or m.group(2) not in units:
        return None
    return int(m.group(1)) * units[m.group(2)]


def _zenml_memory(field: str, value: Decimal) -> str:
    """A byte count in ZenML's units, exactly (``4Gi`` -> ``4GiB``)."""
    if value <= 0 or value != value.to_integral_value():
        raise ConfigurationError(field, "a whole, positive number of bytes", str(value))
    count = int(value)
    units = sorted(ByteUnit, key=lambda u: u.byte_value, reverse=True)
    for unit in units:
        if count % unit.byte_value == 0:
            return f"{count // unit.byte_value}{unit.value}"
    raise AssertionError("B divides every count")  # pragma: no cover


def _resources(res: Any, out: Translation) -> None:
    zenml = "pod_settings.resources"
    if not res:
        return
    if not isinstance(res, Mapping):
        raise ConfigurationError(zenml, "a mapping with requests and limits", res)
    extra = sorted(set(res) - {"requests", "limits"})
    if extra:
        raise ConfigurationError(
            f"{zenml}{_key(extra[0])}",
            "requests and limits only (dynamic resource claims are not supported)",
            None,
        )
    requests: Mapping[str, Any] = res.get("requests") or {}
    limits: Mapping[str, Any] = res.get("limits") or {}
    accelerators: list[str] = []
    for name in sorted(set(requests) | set(limits)):
        req, lim = requests.get(name), limits.get(name)
        where = f"{zenml}{_key('limits' if lim is not None else 'requests')}{_key(name)}"
        r = None if req is None else _quantity(f"{zenml}['requests']{_key(name)}", req)
        lq = None if lim is None else _quantity(f"{zenml}['limits']{_key(name)}", lim)
        if name == "cpu":
            if r is not None and lq is not None and r != lq:
                raise ConfigurationError(
                    f"{zenml}['limits']['cpu']",
                    f"no CPU limit, or one equal to requests.cpu ({req}): CPU is requested "
                    "here, and limited to the same value only with cpu_limit=True",
                    lim,
                )
            cores = r if r is not None else lq
            assert cores is not None
            out.resources["cpu_count"] = float(cores)
            out.came_from("resource_settings.cpu_count", where)
            if lq is not None:
                out.settings["cpu_limit"] = True
                out.came_from("settings.cpu_limit", where)
        elif name == "memory":
            if r is not None and lq is not None and r != lq:
                raise ConfigurationError(
                    f"{zenml}['limits']['memory']",
                    f"a memory limit equal to requests.memory ({req}), or only one of the "
                    "two: a step's memory is requested and limited to the same value here",
                    lim,
                )
            size = r if r is not None else lq
            assert size is not None
            out.resources["memory"] = _zenml_memory(where, size)
            out.came_from("resource_settings.memory", where)
        elif _ACCELERATOR.match(name) and not name.split("/", 1)[0].endswith("kubernetes.io"):
            accelerators.append(name)
            if r is not None and lq is not None and r != lq:
                raise ConfigurationError(
                    f"{zenml}['limits']{_key(name)}",
                    f"the same number as requests{_key(name)} (Kubernetes requires it)",
                    lim,
                )
            count = lq if lq is not None else r
            assert count is not None
            if count != count.to_integral_value() or count < 0:
                raise ConfigurationError(where, "a whole number of devices", lim or req)
            out.resources["gpu_count"] = int(count)
            out.came_from("resource_settings.gpu_count", where)
            out.came_from("settings.gpu_count", where)
            mig = _MIG.match(name)
            vendor = "nvidia" if mig else _VENDORS.get(name, name)
            chosen = out.settings.get("gpu_vendor")
            if chosen is not None and chosen != vendor:
                raise ConfigurationError(where, f"GPUs of gpu_vendor {chosen!r}", name)
            out.settings["gpu_vendor"] = vendor
            out.came_from("settings.gpu_vendor", where)
            if mig:
                out.settings["mig_profile"] = mig.group(1)
                out.came_from("settings.mig_profile", where)
        else:
            raise ConfigurationError(
                f"{zenml}['requests' or 'limits']{_key(name)}",
                "cpu, memory and one accelerator (nvidia.com/gpu, amd.com/gpu, "
                "nvidia.com/mig-<profile>, or another extended resource): other resources "
                "(ephemeral-storage, hugepages) are not requested by k8s-step-operator",
                None,
            )
    if len(accelerators) > 1:
        raise ConfigurationError(zenml, "one kind of accelerator per step", ", ".join(accelerators))
    if accelerators and out.settings.get("gpu_count") is not None:
        raise ConfigurationError(
            zenml, "GPUs in only one of pod_settings.resources and gpu_count", None
        )


# -- environment -----------------------------------------------------------------------------------


def _env(s: dict[str, Any], values: Any, out: Translation) -> None:
    zenml = "pod_settings.env"
    if not values:
        return
    if not isinstance(values, list):
        raise ConfigurationError(zenml, "a list of {name, value} or {name, valueFrom}", values)
    plain = dict(s.get("env") or {})
    secret = dict(s.get("secret_env") or {})
    for i, var in enumerate(values):
        where = f"{zenml}[{i}]"
        if not isinstance(var, Mapping) or not isinstance(var.get("name"), str):
            raise ConfigurationError(where, "a variable {name, value} or {name, valueFrom}", var)
        name = var["name"]
        source = var.get("valueFrom") or var.get("value_from")
        if source is None:
            value = var.get("value", "")
            if name in plain and plain[name] != value:
                raise ConfigurationError(where, f"the value env[{name!r}] has, or only one", None)
            plain[name] = value if isinstance(value, str) else str(value)
            out.came_from(f"settings.env{_key(name)}", where)
            continue
        ref = source.get("secretKeyRef") or source.get("secret_key_ref")
        if not ref or set(source) - {"secretKeyRef", "secret_key_ref"}:
            kind = next(iter(source), "")
            raise ConfigurationError(
                f"{where}.valueFrom",
                "a value, or valueFrom.secretKeyRef: variables from ConfigMaps, pod fields and "
                "resource fields are not supported; put the value in env, or the variable in "
                "a Secret",
                kind,
            )
        secret[name] = {k: v for k, v in ref.items() if k in ("name", "key", "optional")}
        out.came_from(f"settings.secret_env{_key(name)}", f"{where}.valueFrom.secretKeyRef")
    if plain:
        s["env"] = plain
    if secret:
        s["secret_env"] = secret


def _env_from(s: dict[str, Any], values: Any, out: Translation) -> None:
    zenml = "pod_settings.env_from"
    if not values:
        return
    if not isinstance(values, list):
        raise ConfigurationError(zenml, "a list of {secretRef: {name}}", values)
    existing = list(s.get("secret_env_from") or [])
    for i, source in enumerate(values):
        where = f"{zenml}[{i}]"
        ref = (
            source.get("secretRef") or source.get("secret_ref")
            if isinstance(source, Mapping)
            else None
        )
        if not ref or set(source) - {"secretRef", "secret_ref"} or set(ref) - {"name"}:
            raise ConfigurationError(
                where,
                "{secretRef: {name}}: variables from ConfigMaps, prefixes and optional "
                "sources are not supported; use secret_env_from with Secret names",
                None,
            )
        out.came_from(f"settings.secret_env_from[{len(existing)}]", where)
        existing.append(ref["name"])
    s["secret_env_from"] = existing


# -- security ---------------------------------------------------------------------------------


def _container_security(s: dict[str, Any], ctx: Mapping[str, Any], out: Translation) -> None:
    zenml = "pod_settings.container_security_context"
    restricted = s.get("pod_security_profile", "restricted") == "restricted"
    for key, value in ctx.items():
        where = f"{zenml}.{key}"
        if key in ("runAsUser", "run_as_user"):
            _same(s, "run_as_user", value, where, out)
        elif key in ("runAsGroup", "run_as_group"):
            _same(s, "run_as_group", value, where, out)
        elif not (restricted and _restricted_sets(key, value)):
            raise ConfigurationError(
                where,
                "runAsUser and runAsGroup (as run_as_user and run_as_group), or what "
                "pod_security_profile='restricted' sets itself (allowPrivilegeEscalation "
                "false, runAsNonRoot true, capabilities drop ALL, seccompProfile "
                "RuntimeDefault): other container security settings are not supported",
                value,
            )


def _restricted_sets(key: str, value: Any) -> bool:
    """Whether the restricted profile sets security field ``key`` to ``value`` itself."""
    if key == "capabilities":
        return (
            isinstance(value, Mapping)
            and list(value.get("drop") or []) == ["ALL"]
            and not value.get("add")
        )
    if key == "seccompProfile":
        return bool(value == {"type": "RuntimeDefault"})
    return key in _RESTRICTED_CONTAINER and value == _RESTRICTED_CONTAINER[key]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _pod_spec_args(s: dict[str, Any], args: Any, out: Translation) -> None:
    zenml = "pod_settings.additional_pod_spec_args"
    if not args:
        return
    if not isinstance(args, Mapping):
        raise ConfigurationError(zenml, "a mapping of V1PodSpec attribute names", args)
    for key, value in args.items():
        where = f"{zenml}{_key(key)}"
        if value is None:
            continue  # ZenML skips None values
        if key != key.lower():
            raise ConfigurationError(
                where,
                "a V1PodSpec attribute name in snake_case such as dns_policy (ZenML's own "
                "operator ignores camelCase keys)",
                None,
            )
        if key in _POD_ARG_FIELDS:
            _same(s, _POD_ARG_FIELDS[key], value, where, out)
        elif key == "node_selector":
            _merge_map(s, "node_selector", value, where, out)
        elif key == "tolerations":
            _tolerations(s, value, where, out)
        elif key == "affinity":
            _set_once(s, "affinity", value, where, out)
        elif key == "image_pull_secrets":
            _pull_secrets(s, value, where, out)
        elif key == "security_context":
            _pod_security(s, value, where, out)
        elif _camel(key) in ALLOWED_POD_SPEC_OVERRIDE_KEYS:
            camel = _camel(key)
            if isinstance(value, list):
                _append(s, "pod_spec_overrides", camel, value, where, out)
            else:
                _override(s, "pod_spec_overrides", camel, value, where, out)
        else:
            accepted = sorted(
                [*_POD_ARG_FIELDS, "node_selector", "tolerations", "affinity", "image_pull_secrets"]
                + ["security_context"]
                + [_snake(k) for k in ALLOWED_POD_SPEC_OVERRIDE_KEYS]
            )
            raise ConfigurationError(
                where,
                "one of " + ", ".join(accepted) + ": the pod-spec fields k8s-step-operator "
                "lets a step set (the others it sets itself, or refuses under the 'restricted' "
                "Pod Security profile)",
                None,
            )


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _pod_security(s: dict[str, Any], ctx: Any, zenml: str, out: Translation) -> None:
    if not isinstance(ctx, Mapping):
        raise ConfigurationError(zenml, "a pod security context mapping", ctx)
    fields = {
        "runAsUser": "run_as_user",
        "run_as_user": "run_as_user",
        "runAsGroup": "run_as_group",
        "run_as_group": "run_as_group",
        "fsGroup": "fs_group",
        "fs_group": "fs_group",
    }
    restricted = s.get("pod_security_profile", "restricted") == "restricted"
    for key, value in ctx.items():
        where = f"{zenml}{_key(key)}"
        if key in fields:
            _same(s, fields[key], value, where, out)
        elif not (
            restricted and _camel(key) in _POD_RESTRICTED and _restricted_sets(_camel(key), value)
        ):
            raise ConfigurationError(
                where,
                "runAsUser, runAsGroup and fsGroup (as run_as_user, run_as_group and fs_group), "
                "or what pod_security_profile='restricted' sets itself: other pod security "
                "settings are not supported",
                value,
            )


# -- errors under ZenML's names -----------------------------------------------------------------


def rename(
    error: ConfigurationError, origins: Sequence[tuple[str, str]], prefix: str = "settings."
) -> ConfigurationError:
    """``error`` about a translated value, reported under the ZenML name it was written as.

    An error about something inside the value (``settings.tolerations[2].value``) keeps the
    inner part (``settings.pod_settings.tolerations[0].value``). Other errors come back
    unchanged.

    Args:
        error: An error the core raised about the translated settings.
        origins: ``Translation.origins``.
        prefix: What the ZenML name starts with in the new error.
    """
    for core, zenml in sorted(origins, key=lambda o: len(o[0]), reverse=True):
        if error.field == core or error.field.startswith((core + ".", core + "[")):
            renamed = ConfigurationError(
                prefix + zenml + error.field[len(core) :],
                error.accepted,
                error.value,
                detail=error.detail,
            )
            renamed.__cause__ = error
            return renamed
    return error
