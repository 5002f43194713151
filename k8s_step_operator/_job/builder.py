"""Settings in, a batch/v1 Job out: a pure function, no API client, no I/O.

Everything Kubernetes would refuse is refused here first with a ``ConfigurationError`` that names
*our* field (``settings.gpu_vendor``, ``environment['HF_TOKEN']`` ...) and says what is accepted.
The result is a plain JSON-ready dict with the API's camelCase field names, so it can be printed,
diffed, dry-run and submitted unchanged.

Choices made here, each overridable by a setting:

* CPU is requested, not limited (``cpu_limit`` opts in: limits throttle); memory request equals
  its limit (the step is OOM-killed past what it asked for); GPUs: integers, request == limit.
* The vendor's GPU taint is tolerated when GPUs are requested (``gpu_tolerations``).
* The Pod Security "restricted" profile applies (``pod_security_profile="none"`` opts out); the
  user is 1000 unless ``run_as_user`` says otherwise, so images built to run as root still start.
* Plain variables whose names look like secrets are refused (``allow_secret_like_env``);
  ``PYTHONUNBUFFERED=1`` is added unless set, so a step's prints reach the log as they happen.
* No retries (``backoff_limit=0``); evictions and preemptions do not count as failures; finished
  Jobs are deleted after 600 s.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from k8s_step_operator._api.resource_settings import ResourceSettings, split_memory
from k8s_step_operator._api.step_run_info import StepRunInfo
from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.gpu import (
    GPULabelScheme,
    GPUVendor,
    get_gpu_label_scheme,
    mig_resource,
    resolve_gpu_vendor,
)
from k8s_step_operator._job.keys import (
    ANNOTATION_PIPELINE_NAME,
    ANNOTATION_PREFIX,
    ANNOTATION_RUN_ID,
    ANNOTATION_RUN_NAME,
    ANNOTATION_STEP_NAME,
    ANNOTATION_STEP_RUN_ID,
    KUEUE_QUEUE_LABEL,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    LABEL_STEP_NAME,
    LABEL_STEP_RUN_ID,
    MANAGED_BY,
    is_reserved_key,
)
from k8s_step_operator._job.naming import job_name, label_value
from k8s_step_operator._job.quantity import check_quantity
from k8s_step_operator._job.settings import (
    ALLOWED_CONTAINER_OVERRIDE_KEYS,
    ALLOWED_POD_SPEC_OVERRIDE_KEYS,
    KubernetesJobStepOperatorSettings,
    Toleration,
)
from k8s_step_operator._job.validation import (
    check_dns_label,
    check_dns_subdomain,
    check_env_name,
    check_label_value,
    check_qualified_name,
)

__all__ = [
    "CONTAINER_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RUN_AS_USER",
    "FORBIDDEN_ENV",
    "IMAGE_KEY",
    "KUEUE_QUEUE_LABEL",
    "SHM_VOLUME",
    "build_job",
]

CONTAINER_NAME = "step"
DEFAULT_NAMESPACE = "default"
DEFAULT_RUN_AS_USER = 1000
IMAGE_KEY = "kubernetes_job_step_operator"
SHM_VOLUME = "dshm"
# Set by the device plugin for the GPUs actually allocated; a user value could expose every GPU
# of the node without requesting any.
FORBIDDEN_ENV = frozenset(
    {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
)
_SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS", "PRIVATEKEY"}
)
_SECRET_PAIRS = frozenset({("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("AUTH", "KEY")})
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MAX_INT64 = 2**63 - 1
_MAX_ID = 2**31 - 1  # Kubernetes' bound on UIDs and GIDs
_MAX_CPU_CORES = 1_000_000
_MAX_GPUS = 1_000_000
_MAX_ANNOTATION_BYTES = 256 * 1024
_AFFINITY_KEYS = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})
_POD_OVERRIDE_TYPES: dict[str, type | tuple[type, ...]] = {
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
    "preemptionPolicy": str,
    "enableServiceLinks": bool,
    "hostNetwork": bool,
    "shareProcessNamespace": bool,
    "terminationGracePeriodSeconds": int,
}
_CONTAINER_OVERRIDE_TYPES: dict[str, type | tuple[type, ...]] = {
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


def build_job(
    info: StepRunInfo,
    entrypoint_command: Sequence[str],
    environment: Mapping[str, str],
    settings: KubernetesJobStepOperatorSettings,
    *,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Build the batch/v1 Job that runs one step.

    Args:
        info: The step run: ids and names (for the Job's name, labels, annotations), resource
            settings, and the image when ``settings.image`` is unset.
        entrypoint_command: The container's command, as a list (never a shell string).
        environment: Plain environment variables for the step.
        settings: The merged settings (a component config works too).
        namespace: Overrides ``settings.namespace``.

    Returns:
        The Job as a JSON-ready dict with the API's field names.

    Raises:
        ConfigurationError: If any input would be refused by Kubernetes or breaks a rule of this
            library; nothing has been sent.
    """
    s = settings
    ns = check_dns_label(
        "namespace" if namespace else "settings.namespace",
        namespace or s.namespace or DEFAULT_NAMESPACE,
    )
    # str(): ZenML's own StepRunInfo carries UUIDs; any object with these attributes works.
    run_id, step_name = str(info.run_id), str(info.pipeline_step_name)
    step_run_id = str(info.step_run_id)
    for field, text in (
        ("info.run_id", run_id),
        ("info.pipeline_step_name", step_name),
        ("info.step_run_id", step_run_id),
    ):
        if not text:
            raise ConfigurationError(field, "a non-empty string", "")
    name = job_name(run_id, step_name, step_run_id)
    image = _image(info, s)
    command = _command(entrypoint_command)

    gpu_count = _gpu_count(info.config.resource_settings, s)
    resources, gpu_vendor = _resources(info.config.resource_settings, s, gpu_count)

    node_selector = _string_map(
        "settings.node_selector", s.node_selector, labels=True, selector=True
    )
    gpu_expression = _add_gpu_selector(node_selector, s, gpu_count, gpu_vendor)

    tolerations = [
        _toleration(f"settings.tolerations[{i}]", t) for i, t in enumerate(s.tolerations)
    ]
    if (
        gpu_count > 0
        and s.gpu_tolerations
        and not any(t.get("key") == gpu_vendor.taint_key for t in tolerations)
    ):
        tolerations.append(
            {"key": gpu_vendor.taint_key, "operator": "Exists", "effect": "NoSchedule"}
        )

    run_labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN_ID: label_value(run_id),
        LABEL_STEP_NAME: label_value(step_name),
        LABEL_STEP_RUN_ID: label_value(step_run_id),
    }
    raw_names = {
        ANNOTATION_RUN_ID: run_id,
        ANNOTATION_STEP_RUN_ID: step_run_id,
        ANNOTATION_STEP_NAME: step_name,
        ANNOTATION_RUN_NAME: str(info.run_name or ""),
        ANNOTATION_PIPELINE_NAME: str(getattr(info.pipeline, "name", "") or ""),
    }
    job_labels = {**_string_map("settings.labels", s.labels, labels=True), **run_labels}
    if s.queue_name is not None:
        if not s.queue_name:
            raise ConfigurationError("settings.queue_name", "a non-empty LocalQueue name", "")
        job_labels[KUEUE_QUEUE_LABEL] = check_label_value("settings.queue_name", s.queue_name)
    job_annotations = {**_string_map("settings.annotations", s.annotations), **raw_names}
    pod_labels = {**_string_map("settings.pod_labels", s.pod_labels, labels=True), **run_labels}
    pod_annotations = {**_string_map("settings.pod_annotations", s.pod_annotations), **raw_names}
    _check_annotation_size("settings.annotations", job_annotations)
    _check_annotation_size("settings.pod_annotations", pod_annotations)

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": command,
        "env": _env(environment, s),
    }
    if s.image_pull_policy is not None:
        container["imagePullPolicy"] = s.image_pull_policy
    if s.secret_env_from:
        container["envFrom"] = [
            {"secretRef": {"name": check_dns_subdomain(f"settings.secret_env_from[{i}]", n)}}
            for i, n in enumerate(s.secret_env_from)
        ]
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": s.automount_service_account_token,
        "containers": [container],
    }
    if s.service_account_name is not None:
        pod_spec["serviceAccountName"] = check_dns_subdomain(
            "settings.service_account_name", s.service_account_name
        )
    if s.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [
            {"name": check_dns_subdomain(f"settings.image_pull_secrets[{i}]", n)}
            for i, n in enumerate(s.image_pull_secrets)
        ]
    if s.priority_class_name is not None:
        pod_spec["priorityClassName"] = check_dns_subdomain(
            "settings.priority_class_name", s.priority_class_name
        )
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    affinity = _affinity(s.affinity) if s.affinity else {}
    if gpu_expression is not None:
        _require_node_expression(affinity, gpu_expression)
    if affinity:
        pod_spec["affinity"] = affinity
    if tolerations:
        pod_spec["tolerations"] = tolerations
    _apply_security(pod_spec, container, s)
    if s.shm_size is not None:
        size = check_quantity("settings.shm_size", s.shm_size, allow_milli=False)
        if size <= 0 or size > _MAX_INT64:
            raise ConfigurationError(
                "settings.shm_size", "a positive size below 8Ei, such as '1Gi'", s.shm_size
            )
        pod_spec["volumes"] = [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}}
        ]
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    _merge_overrides(
        "settings.container_overrides",
        container,
        s.container_overrides,
        ALLOWED_CONTAINER_OVERRIDE_KEYS,
        _CONTAINER_OVERRIDE_TYPES,
    )
    _merge_overrides(
        "settings.pod_spec_overrides",
        pod_spec,
        s.pod_spec_overrides,
        ALLOWED_POD_SPEC_OVERRIDE_KEYS,
        _POD_OVERRIDE_TYPES,
    )
    _check_overrides_consistency(pod_spec, container, s)

    job_spec: dict[str, Any] = {
        "backoffLimit": s.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": pod_spec,
        },
    }
    failure_policy = _pod_failure_policy(s)
    if failure_policy is not None:
        job_spec["podFailurePolicy"] = failure_policy
    if s.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = _bounded_int(
            "settings.active_deadline_seconds", s.active_deadline_seconds, 1, _MAX_INT64
        )
    if s.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = _bounded_int(
            "settings.ttl_seconds_after_finished", s.ttl_seconds_after_finished, 0, _MAX_ID
        )
    if s.queue_name is not None:
        # Kueue admits suspended Jobs; it un-suspends them when quota is available.
        job_spec["suspend"] = True
    _bounded_int("settings.backoff_limit", s.backoff_limit, 0, _MAX_ID)

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": job_labels,
            "annotations": job_annotations,
        },
        "spec": job_spec,
    }


def _pod_failure_policy(s: KubernetesJobStepOperatorSettings) -> dict[str, Any] | None:
    rules: list[dict[str, Any]] = []
    if s.ignore_disruptions:
        # Preemption, eviction, node drain: not the step's fault, not counted against backoff.
        rules.append(
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        )
    if s.fail_on_exit_codes:
        for i, code in enumerate(s.fail_on_exit_codes):
            if isinstance(code, bool) or not 1 <= code <= 255:
                raise ConfigurationError(
                    f"settings.fail_on_exit_codes[{i}]", "an exit code from 1 to 255", code
                )
        # The API wants the values unique and ascending.
        codes = sorted(set(s.fail_on_exit_codes))
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": codes},
            }
        )
    return {"rules": rules} if rules else None


def _bounded_int(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigurationError(field, f"an integer from {low} to {high}", value)
    return value


def _image(info: StepRunInfo, s: KubernetesJobStepOperatorSettings) -> str:
    image = s.image if s.image is not None else info.get_image(IMAGE_KEY)
    field = "settings.image" if s.image is not None else f"info.images[{IMAGE_KEY!r}]"
    if not image or any(c.isspace() or not c.isprintable() for c in image):
        raise ConfigurationError(field, "a non-empty image reference without whitespace", image)
    return image


def _command(entrypoint_command: Sequence[str]) -> list[str]:
    if isinstance(entrypoint_command, str | bytes) or not entrypoint_command:
        raise ConfigurationError(
            "entrypoint_command", "a non-empty list of strings (never a shell string)", None
        )
    command = list(entrypoint_command)
    for i, part in enumerate(command):
        if not isinstance(part, str):
            raise ConfigurationError(f"entrypoint_command[{i}]", "a string", part)
    if not command[0]:
        raise ConfigurationError("entrypoint_command[0]", "a non-empty program name", "")
    return command


def _gpu_count(resource_settings: ResourceSettings, s: KubernetesJobStepOperatorSettings) -> int:
    if s.gpu_count is not None:
        field, count = "settings.gpu_count", s.gpu_count
    else:
        field, count = "resource_settings.gpu_count", resource_settings.gpu_count or 0
    if isinstance(count, bool) or not isinstance(count, int):
        raise ConfigurationError(field, "a whole number of GPUs", count)
    return _bounded_int(field, count, 0, _MAX_GPUS)


def _resources(
    rs: ResourceSettings, s: KubernetesJobStepOperatorSettings, gpu_count: int
) -> tuple[dict[str, dict[str, str]], GPUVendor]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if rs.cpu_count is not None:
        cores = rs.cpu_count
        if not math.isfinite(cores) or cores <= 0 or cores > _MAX_CPU_CORES:
            raise ConfigurationError(
                "resource_settings.cpu_count", f"a positive number up to {_MAX_CPU_CORES}", cores
            )
        millis = max(1, math.ceil(Decimal(repr(cores)) * 1000))
        cpu = str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
        requests["cpu"] = cpu
        if s.cpu_limit:
            limits["cpu"] = cpu
    elif s.cpu_limit:
        raise ConfigurationError(
            "settings.cpu_limit", "ResourceSettings.cpu_count set when cpu_limit is on", True
        )
    if rs.memory is not None:
        try:
            number, unit = split_memory(rs.memory)
        except ValueError as exc:
            raise ConfigurationError(
                "resource_settings.memory", "a size such as '16GB' or '512MiB'", rs.memory
            ) from exc
        if number <= 0 or number * unit.byte_value > _MAX_INT64:
            raise ConfigurationError(
                "resource_settings.memory", "a positive size below 8EiB", rs.memory
            )
        # Request == limit: the step gets what it asked for and is OOM-killed past it.
        memory = f"{number}{unit.kubernetes_suffix}"
        requests["memory"] = limits["memory"] = memory

    vendor = resolve_gpu_vendor("settings.gpu_vendor", s.gpu_vendor)
    if s.mig_profile is not None:
        resource = mig_resource("settings.mig_profile", vendor, s.mig_profile)
        if gpu_count == 0:
            raise ConfigurationError(
                "settings.gpu_count", "at least 1 MIG slice when mig_profile is set", gpu_count
            )
    else:
        resource = vendor.resource
    if gpu_count > 0:
        # Extended resources: integers, request == limit, or the API server answers 422.
        requests[resource] = limits[resource] = str(gpu_count)
    result: dict[str, dict[str, str]] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result, vendor


def _add_gpu_selector(
    node_selector: dict[str, str],
    s: KubernetesJobStepOperatorSettings,
    gpu_count: int,
    vendor: GPUVendor,
) -> dict[str, Any] | None:
    """Select nodes with the GPU model; returns a node-affinity expression for a model alias.

    A full label value goes into the node selector. A short model name (``H100``) that the
    scheme knows stands for several label values, which only node affinity can express.
    """
    normalize: Callable[[str], str] | None = None
    scheme: GPULabelScheme | None = None
    if s.gpu_label_key is not None:
        key: str | None = check_qualified_name("settings.gpu_label_key", s.gpu_label_key)
    elif s.gpu_label_scheme is not None:
        scheme = get_gpu_label_scheme("settings.gpu_label_scheme", s.gpu_label_scheme)
        key, normalize = scheme.label_key, scheme.normalize
    elif vendor.label_scheme is not None:
        scheme = get_gpu_label_scheme("settings.gpu_label_scheme", vendor.label_scheme)
        key, normalize = scheme.label_key, scheme.normalize
    else:
        key = None
    if s.gpu_type is None:
        return None
    if key is None:
        raise ConfigurationError(
            "settings.gpu_label_scheme",
            f"a label scheme or gpu_label_key: gpu_vendor {vendor.name!r} has no default label "
            "for the GPU model",
            None,
        )
    if gpu_count == 0:
        raise ConfigurationError(
            "settings.gpu_type", "a GPU count of at least 1 when a GPU type is set", s.gpu_type
        )
    aliased = scheme.expand(s.gpu_type) if scheme is not None else None
    if aliased is not None:
        if key in node_selector:
            raise ConfigurationError(
                "settings.node_selector",
                f"no value for {key!r} when gpu_type names the model {s.gpu_type!r}",
                node_selector[key],
            )
        return {"key": key, "operator": "In", "values": list(aliased)}
    value = normalize(s.gpu_type) if normalize else s.gpu_type
    if not value:
        raise ConfigurationError("settings.gpu_type", "a non-empty GPU model name", s.gpu_type)
    check_label_value("settings.gpu_type", value)
    existing = node_selector.get(key)
    if existing is not None and existing != value:
        raise ConfigurationError(
            "settings.node_selector",
            f"no other value for {key!r} than the GPU type {value!r}",
            existing,
        )
    node_selector[key] = value
    return None


def _require_node_expression(affinity: dict[str, Any], expression: dict[str, Any]) -> None:
    """AND ``expression`` into the required node affinity (into every term, if there are any)."""
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []}
    )
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": [dict(expression)]})
        return
    for term in terms:
        term.setdefault("matchExpressions", []).append(dict(expression))


def _check_key(field: str, key: str) -> None:
    check_qualified_name(f"{field}[{key!r}]", key)
    if is_reserved_key(key):
        raise ConfigurationError(
            f"{field}[{key!r}]",
            "a key outside those this library or Kubernetes set (kubernetes.io/, k8s.io/, "
            f"{ANNOTATION_PREFIX}, {LABEL_MANAGED_BY}, {KUEUE_QUEUE_LABEL} - use queue_name)",
            key,
        )


def _string_map(
    field: str, data: Mapping[str, str], *, labels: bool = False, selector: bool = False
) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in data.items():
        if selector:  # selecting on labels others set is fine; only setting them is not
            check_qualified_name(f"{field}[{key!r}]", key)
        else:
            _check_key(field, key)
        if labels:
            check_label_value(f"{field}[{key!r}]", value)
        elif not isinstance(value, str):
            raise ConfigurationError(f"{field}[{key!r}]", "a string", value)
        result[key] = value
    return result


def _check_annotation_size(field: str, annotations: Mapping[str, str]) -> None:
    total = sum(
        len(k.encode()) + len(v.encode("utf-8", "surrogatepass")) for k, v in annotations.items()
    )
    if total > _MAX_ANNOTATION_BYTES:
        raise ConfigurationError(
            field,
            "annotations (with the run and step names) of at most 256 KiB in total",
            f"{total} bytes",
        )


def _toleration(field: str, t: Toleration) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if t.key:
        result["key"] = check_qualified_name(f"{field}.key", t.key)
    elif t.operator != "Exists":
        raise ConfigurationError(f"{field}.operator", "'Exists' when key is empty", t.operator)
    result["operator"] = t.operator
    if t.operator == "Exists":
        if t.value:
            raise ConfigurationError(f"{field}.value", "no value with operator 'Exists'", t.value)
    else:
        result["value"] = check_label_value(f"{field}.value", t.value)
    if t.effect:
        result["effect"] = t.effect
    if t.toleration_seconds is not None:
        if t.effect != "NoExecute":
            raise ConfigurationError(
                f"{field}.toleration_seconds", "only with effect 'NoExecute'", t.toleration_seconds
            )
        result["tolerationSeconds"] = _bounded_int(
            f"{field}.toleration_seconds", t.toleration_seconds, -_MAX_INT64 - 1, _MAX_INT64
        )
    return result


def _json_copy(field: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            field, "JSON-compatible data (mappings, lists, strings, numbers)", None, detail=str(exc)
        ) from exc


def _affinity(affinity: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in affinity.items():
        if key not in _AFFINITY_KEYS:
            raise ConfigurationError(
                f"settings.affinity[{key!r}]", "one of " + ", ".join(sorted(_AFFINITY_KEYS)), key
            )
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"settings.affinity[{key!r}]", "a mapping", None)
    result: dict[str, Any] = _json_copy("settings.affinity", dict(affinity))
    return result


def _is_secret_like(name: str) -> bool:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name.upper()) if p]
    if any(p in _SECRET_WORDS for p in parts):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def _env(
    environment: Mapping[str, str], s: KubernetesJobStepOperatorSettings
) -> list[dict[str, Any]]:
    plain: dict[str, str] = {}
    for source, data in (("environment", environment), ("settings.env", s.env)):
        for name, value in data.items():
            field = f"{source}[{name!r}]"
            check_env_name(field, name)
            if name in FORBIDDEN_ENV:
                raise ConfigurationError(
                    field,
                    "no GPU visibility variables: the device plugin sets them for the GPUs "
                    "requested (use gpu_count)",
                    name,
                )
            if not isinstance(value, str):
                raise ConfigurationError(field, "a string value", type(value).__name__)
            if _is_secret_like(name) and not s.allow_secret_like_env:
                # Never echo the value: it is probably a secret.
                raise ConfigurationError(
                    field,
                    "a non-secret variable: pass secrets by reference with settings.secret_env "
                    "(NAME: {name, key}) or settings.secret_env_from, or set "
                    "allow_secret_like_env",
                    None,
                )
            plain[name] = value
    plain.setdefault("PYTHONUNBUFFERED", "1")
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    for name, ref in s.secret_env.items():
        field = f"settings.secret_env[{name!r}]"
        check_env_name(field, name)
        if name in FORBIDDEN_ENV:
            raise ConfigurationError(field, "no GPU visibility variables", name)
        if name in plain:
            raise ConfigurationError(field, "a name not also given as a plain variable", name)
        check_dns_subdomain(f"{field}.name", ref.name)
        if len(ref.key) > 253 or not _SECRET_KEY.match(ref.key):
            raise ConfigurationError(
                f"{field}.key", "a Secret key: at most 253 characters [-._a-zA-Z0-9]", ref.key
            )
        selector: dict[str, Any] = {"name": ref.name, "key": ref.key}
        if ref.optional:
            selector["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": selector}})
    return env


def _apply_security(
    pod_spec: dict[str, Any], container: dict[str, Any], s: KubernetesJobStepOperatorSettings
) -> None:
    pod_ctx: dict[str, Any] = {}
    for field, key, value in (
        ("settings.run_as_user", "runAsUser", s.run_as_user),
        ("settings.run_as_group", "runAsGroup", s.run_as_group),
        ("settings.fs_group", "fsGroup", s.fs_group),
    ):
        if value is not None:
            pod_ctx[key] = _bounded_int(field, value, 0, _MAX_ID)
    if s.pod_security_profile == "restricted":
        if s.run_as_user == 0:
            raise ConfigurationError(
                "settings.run_as_user",
                "a non-zero UID under pod_security_profile 'restricted' (or the profile 'none')",
                0,
            )
        pod_ctx.setdefault("runAsUser", DEFAULT_RUN_AS_USER)
        pod_ctx["runAsNonRoot"] = True
        pod_ctx["seccompProfile"] = {"type": "RuntimeDefault"}
        container["securityContext"] = _restricted_container_context()
    if pod_ctx:
        pod_spec["securityContext"] = pod_ctx


def _restricted_container_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _merge_overrides(
    field: str,
    target: dict[str, Any],
    overrides: Mapping[str, Any],
    allowed: frozenset[str],
    types: Mapping[str, type | tuple[type, ...]],
) -> None:
    for key, value in overrides.items():
        key_field = f"{field}[{key!r}]"
        if key not in allowed:
            raise ConfigurationError(key_field, "one of " + ", ".join(sorted(allowed)), key)
        expected = types.get(key, object)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            name = expected.__name__ if isinstance(expected, type) else str(expected)
            raise ConfigurationError(key_field, f"a {name}", type(value).__name__)
        value = _json_copy(key_field, value)
        if isinstance(value, list):
            existing = target.get(key, [])
            names = {item.get("name") for item in existing if isinstance(item, dict)}
            for i, item in enumerate(value):
                if isinstance(item, dict) and item.get("name") in names and item.get("name"):
                    raise ConfigurationError(
                        f"{key_field}[{i}].name",
                        "a name not used already (" + ", ".join(sorted(map(str, names))) + ")",
                        item.get("name"),
                    )
                if isinstance(item, dict) and "name" in item:
                    names.add(item["name"])
            target[key] = [*existing, *value]
        else:
            target[key] = value


def _check_overrides_consistency(
    pod_spec: dict[str, Any], container: dict[str, Any], s: KubernetesJobStepOperatorSettings
) -> None:
    mounts = [m for m in container.get("volumeMounts", []) if isinstance(m, dict)]
    paths = [m.get("mountPath") for m in mounts]
    duplicated = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicated:
        raise ConfigurationError(
            "settings.container_overrides['volumeMounts']",
            "each mountPath once (/dev/shm is taken when shm_size is set)",
            duplicated[0],
        )
    if s.pod_security_profile != "restricted":
        return
    if pod_spec.get("hostNetwork"):
        raise ConfigurationError(
            "settings.pod_spec_overrides['hostNetwork']",
            "hostNetwork only with pod_security_profile 'none'",
            True,
        )
    # Init containers run in the same pod: Pod Security checks them too.
    for init in pod_spec.get("initContainers", []):
        if isinstance(init, dict):
            ctx = init.setdefault("securityContext", {})
            if isinstance(ctx, dict):
                for key, value in _restricted_container_context().items():
                    ctx.setdefault(key, value)
