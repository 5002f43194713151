"""The one validation stage: a step and its settings in, a fully checked ``StepSpec`` out.

The settings model has checked every field on its own (types, bounds, Kubernetes syntax). What
is left needs several fields or the step itself, and is checked here, once, in the order the
Job is read: the namespace, the step's ids, image and command; GPUs, CPU and memory; the GPU
model against its label scheme; metadata with the run's names; the environment; the security
profile; the overrides against everything else; for a step of several ranks, what would contradict
their number or their names. The first problem raises ``ConfigurationError``
naming our field (``resource_settings.memory``, ``environment['HF_TOKEN']``,
``settings.pod_spec_overrides['volumes'][0].name``) and saying what is accepted; nothing has
been sent. The assembler then only writes what this stage decided.

``info`` may be ZenML's own ``StepRunInfo`` (ids as UUIDs, its own ``ResourceSettings``):
only the attributes are read, and the resource values are checked here because ZenML's model
knows none of Kubernetes' bounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._format import size
from k8s_step_operator._job.env import (
    SECRET_LIKE_ACCEPTED,
    check_env_name_allowed,
    is_secret_like,
)
from k8s_step_operator._job.env_secret import env_secret_name
from k8s_step_operator._job.gpu import (
    GPU_LABEL_SCHEMES,
    GPULabelScheme,
    GPUVendor,
    get_gpu_label_scheme,
    mig_resource,
    resolve_gpu_vendor,
)
from k8s_step_operator._job.keys import (
    ANNOTATION_PIPELINE_NAME,
    ANNOTATION_RUN_ID,
    ANNOTATION_RUN_NAME,
    ANNOTATION_STEP_NAME,
    ANNOTATION_STEP_RUN_ID,
    JOB_NAME_LABEL,
    KUEUE_PREFERRED_TOPOLOGY_ANNOTATION,
    KUEUE_PRIORITY_CLASS_LABEL,
    KUEUE_QUEUE_LABEL,
    KUEUE_REQUIRED_TOPOLOGY_ANNOTATION,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    LABEL_STEP_NAME,
    LABEL_STEP_RUN_ID,
    MANAGED_BY,
)
from k8s_step_operator._job.kube_syntax import (
    MAX_ARG_BYTES,
    MAX_OBJECT_BYTES,
    MAX_SECRET_BYTES,
    check_dns_label,
    check_image,
    check_label_value,
    check_secret_key,
    deep_copy,
)
from k8s_step_operator._job.naming import job_name, label_value
from k8s_step_operator._job.overrides import check_overrides_fit
from k8s_step_operator._job.ranks import DISTRIBUTED_ENV
from k8s_step_operator._job.settings import (
    DEFAULT_NAMESPACE,
    DEFAULT_RUN_AS_USER,
    MAX_ANNOTATION_BYTES,
    MAX_CPU_CORES,
    MAX_GPUS,
    KubernetesJobStepOperatorSettings,
    annotation_bytes,
)
from k8s_step_operator._job.spec import (
    CONTAINER_NAME,
    IMAGE_KEY,
    SHM_MOUNT_PATH,
    SHM_VOLUME,
    StepSpec,
)
from k8s_step_operator._step_operator_api.sizes import check_size
from k8s_step_operator._step_operator_api.step_run_info import StepRunInfo

__all__ = ["NO_SECRET_ENVIRONMENT", "check_job_size", "validate_step"]

NO_SECRET_ENVIRONMENT: Mapping[str, str] = MappingProxyType({})


def validate_step(
    info: StepRunInfo,
    entrypoint_command: Sequence[str],
    environment: Mapping[str, str],
    settings: KubernetesJobStepOperatorSettings,
    *,
    namespace: str | None = None,
    secret_environment: Mapping[str, str] = NO_SECRET_ENVIRONMENT,
    gpu_label_schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES,
) -> StepSpec:
    """Check everything about one step that its settings could not check alone.

    Args:
        info: The step run: ids and names, resource settings, the image.
        entrypoint_command: The container's command, as a list (never a shell string).
        environment: Plain environment variables for the step.
        settings: The merged settings (a component config works too), already valid field by
            field.
        namespace: Overrides ``settings.namespace``.
        secret_environment: Variables whose values go into the Job's own Secret; only their
            names are read here.
        gpu_label_schemes: The label schemes ``settings.gpu_label_scheme`` may name, by name.

    Returns:
        The step, fully checked and normalized.

    Raises:
        ConfigurationError: If any input would be refused by Kubernetes or breaks a rule of this
            library.
    """
    _check_input_types(info, entrypoint_command, environment, settings, secret_environment)
    s = settings
    ns = check_dns_label("namespace", namespace) if namespace else s.namespace or DEFAULT_NAMESPACE
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
    ranks = s.num_nodes
    name = job_name(run_id, step_name, step_run_id, ranks=ranks)
    image = s.image if s.image is not None else _info_image(info)
    command = _command(entrypoint_command)

    resource_settings = info.config.resource_settings
    gpu_count = _gpu_count(resource_settings, s)
    requests, limits, vendor = _resources(resource_settings, s, gpu_count)
    node_selector = dict(s.node_selector)
    gpu_expression = _gpu_selector(node_selector, s, gpu_count, vendor, gpu_label_schemes)
    affinity = _affinity(s.affinity, gpu_expression)
    if ranks > 1 and s.topology is not None and s.queue_name is None:
        _topology_affinity(affinity, name, s.topology, s.topology_mode)
    gpu_taint_key = (
        vendor.taint_key
        if gpu_count > 0
        and s.gpu_tolerations
        and not any(t.key == vendor.taint_key for t in s.tolerations)
        else None
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
    job_labels = {**s.labels, **run_labels}
    if s.queue_name is not None:
        job_labels[KUEUE_QUEUE_LABEL] = s.queue_name
    if s.workload_priority_class is not None:
        job_labels[KUEUE_PRIORITY_CLASS_LABEL] = s.workload_priority_class
    job_annotations = {**s.annotations, **raw_names}
    pod_labels = {**s.pod_labels, **run_labels}
    pod_annotations = {**s.pod_annotations, **raw_names}
    if ranks > 1 and s.topology is not None and s.queue_name is not None:
        pod_annotations[_KUEUE_TOPOLOGY[s.topology_mode]] = s.topology
    _check_annotation_size("settings.annotations", s.annotations, raw_names)
    _check_annotation_size(
        "settings.pod_annotations",
        {k: v for k, v in pod_annotations.items() if k not in raw_names},
        raw_names,
    )

    plain_env = _plain_env(environment, s)
    secret_refs = _secret_refs(s, plain_env)
    generated = _generated_secret_env(secret_environment, plain_env, s)
    secret_name = env_secret_name(name) if generated else None
    if ranks > 1:
        _check_ranks(
            s,
            [
                *((f"environment[{n!r}]", n) for n in environment),
                *((f"settings.env[{n!r}]", n) for n in s.env),
                *((f"settings.secret_env[{n!r}]", n) for n in s.secret_env),
                *((f"secret_environment[{n!r}]", n) for n, _ in generated),
            ],
        )

    if s.pod_security_profile == "restricted" and s.run_as_user == 0:
        raise ConfigurationError(
            "settings.run_as_user",
            "a non-zero UID under pod_security_profile 'restricted' (or the profile 'none')",
            0,
        )
    run_as_user = s.run_as_user
    if s.pod_security_profile == "restricted" and run_as_user is None:
        run_as_user = DEFAULT_RUN_AS_USER

    check_overrides_fit(
        s.pod_spec_overrides,
        s.container_overrides,
        restricted=s.pod_security_profile == "restricted",
        builder_volumes=[SHM_VOLUME] if s.shm_size is not None else [],
        builder_mounts=[SHM_MOUNT_PATH] if s.shm_size is not None else [],
        container_name=CONTAINER_NAME,
        secret_like=_secret_like_rule(s),
    )

    return StepSpec(
        name=name,
        namespace=ns,
        job_labels=MappingProxyType(job_labels),
        job_annotations=MappingProxyType(job_annotations),
        pod_labels=MappingProxyType(pod_labels),
        pod_annotations=MappingProxyType(pod_annotations),
        image=image,
        command=tuple(command),
        image_pull_policy=s.image_pull_policy,
        plain_env=tuple(plain_env.items()),
        secret_env=tuple(secret_refs),
        generated_secret_env=tuple(generated),
        env_secret_name=secret_name,
        secret_env_from=tuple(s.secret_env_from),
        requests=MappingProxyType(requests),
        limits=MappingProxyType(limits),
        service_account_name=s.service_account_name,
        automount_service_account_token=s.automount_service_account_token,
        image_pull_secrets=tuple(s.image_pull_secrets),
        priority_class_name=s.priority_class_name,
        node_selector=MappingProxyType(node_selector),
        affinity=MappingProxyType(affinity) if affinity else None,
        tolerations=tuple(s.tolerations),
        gpu_taint_key=gpu_taint_key,
        security_profile=s.pod_security_profile,
        run_as_user=run_as_user,
        run_as_group=s.run_as_group,
        fs_group=s.fs_group,
        shm_size=check_size("settings.shm_size", s.shm_size).quantity
        if s.shm_size is not None
        else None,
        pod_spec_overrides=MappingProxyType(dict(s.pod_spec_overrides)),
        container_overrides=MappingProxyType(dict(s.container_overrides)),
        backoff_limit=s.backoff_limit,
        ignore_disruptions=s.ignore_disruptions,
        # The API wants the values unique and ascending.
        fail_on_exit_codes=tuple(sorted(set(s.fail_on_exit_codes))),
        active_deadline_seconds=s.active_deadline_seconds,
        ttl_seconds_after_finished=s.ttl_seconds_after_finished,
        # Kueue admits suspended Jobs; it un-suspends them when quota is available.
        suspend=s.queue_name is not None,
        ranks=ranks,
        rendezvous_port=s.rendezvous_port,
        procs_per_rank=max(1, gpu_count),
    )


# --- the step's own inputs -------------------------------------------------------------------

_INFO_ATTRIBUTES = ("run_id", "step_run_id", "pipeline_step_name", "config", "get_image")


def _check_input_types(
    info: Any,
    entrypoint_command: Any,
    environment: Any,
    settings: Any,
    secret_environment: Any,
) -> None:
    """Refuse an argument of the wrong kind (swapped, or a mapping for a model) by its name."""
    if not all(hasattr(info, a) for a in _INFO_ATTRIBUTES):
        raise ConfigurationError(
            "info",
            "a StepRunInfo (run_id, step_run_id, pipeline_step_name, config, images)",
            type(info).__name__,
        )
    if isinstance(entrypoint_command, Mapping):
        raise ConfigurationError(
            "entrypoint_command",
            "a non-empty list of strings (the environment is the next argument)",
            type(entrypoint_command).__name__,
        )
    for field, value in (("environment", environment), ("secret_environment", secret_environment)):
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                field, "a mapping of variable names to string values", type(value).__name__
            )
    if not isinstance(settings, KubernetesJobStepOperatorSettings):
        raise ConfigurationError(
            "settings",
            "a KubernetesJobStepOperatorSettings (from a mapping: parse_settings(mapping) or "
            "KubernetesJobStepOperatorSettings(**mapping))",
            type(settings).__name__,
        )


def _info_image(info: StepRunInfo) -> str:
    return check_image(f"info.images[{IMAGE_KEY!r}]", info.get_image(IMAGE_KEY))


def _command(entrypoint_command: Sequence[str]) -> list[str]:
    if isinstance(entrypoint_command, str | bytes) or not entrypoint_command:
        raise ConfigurationError(
            "entrypoint_command", "a non-empty list of strings (never a shell string)", None
        )
    command = list(entrypoint_command)
    for i, part in enumerate(command):
        if not isinstance(part, str):
            raise ConfigurationError(f"entrypoint_command[{i}]", "a string", part)
        _check_arg_size(f"entrypoint_command[{i}]", part, "an argument")
    if not command[0]:
        raise ConfigurationError("entrypoint_command[0]", "a non-empty program name", "")
    return command


# --- resources ---------------------------------------------------------------------------------


def _gpu_count(resource_settings: Any, s: KubernetesJobStepOperatorSettings) -> int:
    if s.gpu_count is not None:
        return s.gpu_count
    count = resource_settings.gpu_count or 0
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_GPUS:
        raise ConfigurationError(
            "resource_settings.gpu_count", f"a whole number of GPUs from 0 to {MAX_GPUS}", count
        )
    return count


def _resources(
    rs: Any, s: KubernetesJobStepOperatorSettings, gpu_count: int
) -> tuple[dict[str, str], dict[str, str], GPUVendor]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if rs.cpu_count is not None:
        cores = rs.cpu_count
        if (
            isinstance(cores, bool)
            or not isinstance(cores, int | float)
            or not math.isfinite(cores)
            or not 0 < cores <= MAX_CPU_CORES
        ):
            raise ConfigurationError(
                "resource_settings.cpu_count", f"a positive number up to {MAX_CPU_CORES}", cores
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
        # Request == limit: the step gets what it asked for and is OOM-killed past it.
        memory = check_size("resource_settings.memory", rs.memory).quantity
        requests["memory"] = limits["memory"] = memory

    vendor = resolve_gpu_vendor("settings.gpu_vendor", s.gpu_vendor)
    if s.mig_profile is not None:
        # Checked against the vendor even when this step requests no slice (see _gpu_selector).
        resource = mig_resource("settings.mig_profile", vendor, s.mig_profile)
    else:
        resource = vendor.resource
    if gpu_count > 0:
        # Extended resources: integers, request == limit, or the API server answers 422.
        requests[resource] = limits[resource] = str(gpu_count)
    return requests, limits, vendor


# --- placement ---------------------------------------------------------------------------------


def _gpu_selector(
    node_selector: dict[str, str],
    s: KubernetesJobStepOperatorSettings,
    gpu_count: int,
    vendor: GPUVendor,
    schemes: Mapping[str, GPULabelScheme],
) -> dict[str, Any] | None:
    """Select nodes with the GPU model; returns a node-affinity expression for a model alias.

    A full label value goes into the node selector. A short model name (``H100``) that the
    scheme knows stands for several label values, which only node affinity can express.
    """
    normalize: Callable[[str], str] | None = None
    scheme: GPULabelScheme | None = None
    if s.gpu_label_key is not None:
        key: str | None = s.gpu_label_key
    elif s.gpu_label_scheme is not None:
        scheme = get_gpu_label_scheme("settings.gpu_label_scheme", s.gpu_label_scheme, schemes)
        key, normalize = scheme.label_key, scheme.normalize
    elif vendor.label_scheme is not None:
        scheme = get_gpu_label_scheme("settings.gpu_label_scheme", vendor.label_scheme, schemes)
        key, normalize = scheme.label_key, scheme.normalize
    else:
        key = None
    if s.gpu_type is None or gpu_count == 0:
        # A component's settings may name the model its GPU steps need (ZenML merges them into
        # every step): a step that requests no GPU is not tied to GPU nodes by them.
        return None
    if key is None:
        raise ConfigurationError(
            "settings.gpu_label_scheme",
            f"a label scheme or gpu_label_key: gpu_vendor {vendor.name!r} has no default label "
            "for the GPU model",
            None,
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


def _affinity(
    affinity: Mapping[str, Any] | None, expression: dict[str, Any] | None
) -> dict[str, Any]:
    """The user's affinity (a copy), with ``expression`` ANDed into its required node terms."""
    result: dict[str, Any] = deep_copy(affinity) if affinity else {}
    if expression is None:
        return result
    node = result.setdefault("nodeAffinity", {})
    required = node.setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []}
    )
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": [dict(expression)]})
        return result
    for term in terms:
        term.setdefault("matchExpressions", []).append(dict(expression))
    return result


_KUEUE_TOPOLOGY = {
    "required": KUEUE_REQUIRED_TOPOLOGY_ANNOTATION,
    "preferred": KUEUE_PREFERRED_TOPOLOGY_ANNOTATION,
}


def _topology_affinity(affinity: dict[str, Any], job: str, level: str, mode: str) -> None:
    """Without Kueue, keep the ranks in one domain of ``level`` by pod affinity to each other.

    The first rank may go anywhere its own selectors allow (a pod that matches its own affinity
    term is exempt while no other matches); every later one joins its domain.
    """
    term = {"labelSelector": {"matchLabels": {JOB_NAME_LABEL: job}}, "topologyKey": level}
    pod = affinity.setdefault("podAffinity", {})
    if mode == "required":
        pod.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(term)
    else:
        pod.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {"weight": 100, "podAffinityTerm": term}
        )


def _check_ranks(
    s: KubernetesJobStepOperatorSettings, env_names: Sequence[tuple[str, str]]
) -> None:
    """What would contradict a step of several ranks: their number, names or all-or-nothing."""
    n = s.num_nodes
    if s.backoff_limit != 0:
        raise ConfigurationError(
            "settings.backoff_limit",
            f"0 with num_nodes {n}: a rank that fails fails the whole step at once (retry the "
            "step instead)",
            s.backoff_limit,
        )
    for key in ("hostname", "subdomain"):
        if key in s.pod_spec_overrides:
            raise ConfigurationError(
                f"settings.pod_spec_overrides[{key!r}]",
                f"no {key} with num_nodes {n}: each rank's host is <job>-<rank> in the "
                "subdomain of the step's headless Service",
                s.pod_spec_overrides[key],
            )
    for field, name in env_names:
        if name in DISTRIBUTED_ENV:
            raise ConfigurationError(
                field,
                f"no {name} with num_nodes {n}: every rank gets "
                + ", ".join(DISTRIBUTED_ENV)
                + " from the operator (set num_nodes, rendezvous_port and gpu_count instead)",
                name,
            )
    if s.topology is not None:
        for key in _KUEUE_TOPOLOGY.values():
            if key in s.pod_annotations:
                raise ConfigurationError(
                    f"settings.pod_annotations[{key!r}]",
                    "no Kueue topology annotation next to settings.topology (it sets it)",
                    s.pod_annotations[key],
                )


def _check_annotation_size(
    field: str, annotations: Mapping[str, str], raw_names: Mapping[str, str]
) -> None:
    """Annotations with the run's names: at most 256 KiB, naming the field that fills them."""
    total = annotation_bytes({**annotations, **raw_names})
    if total <= MAX_ANNOTATION_BYTES:
        return
    # The run's names are kept whole in annotations: a huge one is the cause, not the settings.
    sources = {field: annotation_bytes(annotations)}
    for key, field_name in _RAW_NAME_FIELDS.items():
        sources[field_name] = annotation_bytes({key: raw_names.get(key, "")})
    culprit = max(sources, key=lambda f: sources[f])
    raise ConfigurationError(
        culprit,
        "annotations (with the run and step names) of at most 256 KiB in total",
        f"{size(total, up=True)}",
        detail=f"{size(sources[culprit], up=True)} of it from {culprit}",
    )


# The fields the run's names come from, by the annotation that keeps each.
_RAW_NAME_FIELDS = {
    ANNOTATION_RUN_ID: "info.run_id",
    ANNOTATION_STEP_RUN_ID: "info.step_run_id",
    ANNOTATION_STEP_NAME: "info.pipeline_step_name",
    ANNOTATION_RUN_NAME: "info.run_name",
    ANNOTATION_PIPELINE_NAME: "info.pipeline.name",
}


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _check_arg_size(field: str, text: str, what: str) -> None:
    """An argument or ``NAME=value`` string the kernel accepts when the container starts."""
    n = _text_bytes(text)
    if n > MAX_ARG_BYTES:
        # Never the value itself: it may be a secret.
        raise ConfigurationError(
            field,
            f"{what} of less than 128 KiB (Linux refuses to start a process with a longer one: "
            "'argument list too long'); pass large data in a file or a volume",
            f"{size(n, up=True)}",
        )


# --- environment -------------------------------------------------------------------------------


def _secret_like_rule(s: KubernetesJobStepOperatorSettings) -> Callable[[str, str], bool]:
    def refused(name: str, value: str) -> bool:
        return not s.allow_secret_like_env and is_secret_like(name, value)

    return refused


def _plain_env(
    environment: Mapping[str, str], s: KubernetesJobStepOperatorSettings
) -> dict[str, str]:
    refused = _secret_like_rule(s)
    plain: dict[str, str] = {}
    for source, data in (("environment", environment), ("settings.env", s.env)):
        for name, value in data.items():
            field = f"{source}[{name!r}]"
            check_env_name_allowed(field, name)
            if not isinstance(value, str):
                raise ConfigurationError(field, "a string value", type(value).__name__)
            if refused(name, value):
                # Never echo the value: it is probably a secret.
                raise ConfigurationError(field, SECRET_LIKE_ACCEPTED, None)
            _check_arg_size(field, f"{name}={value}", "a variable (NAME=value)")
            plain[name] = value
    plain.setdefault("PYTHONUNBUFFERED", "1")
    return plain


def _secret_refs(s: KubernetesJobStepOperatorSettings, plain: Mapping[str, str]) -> list[Any]:
    for name in s.secret_env:
        if name in plain:
            raise ConfigurationError(
                f"settings.secret_env[{name!r}]", "a name not also given as a plain variable", name
            )
    return list(s.secret_env.items())


def _generated_secret_env(
    secret_environment: Mapping[str, str],
    plain: Mapping[str, str],
    s: KubernetesJobStepOperatorSettings,
) -> list[tuple[str, str]]:
    """(variable, key) pairs of the values that go into the Job's own Secret."""
    result: list[tuple[str, str]] = []
    for name, value in secret_environment.items():
        field = f"secret_environment[{name!r}]"
        check_env_name_allowed(field, name)
        # Classic variable names are Secret keys already; the few that are not are refused.
        check_secret_key(field, name)
        if not isinstance(value, str):
            raise ConfigurationError(field, "a string value", type(value).__name__)
        if name in plain:
            raise ConfigurationError(
                field,
                "a name not also given as a plain variable (environment, settings.env; "
                "PYTHONUNBUFFERED is set for you)",
                name,
            )
        if name in s.secret_env:
            raise ConfigurationError(field, "a name not also in settings.secret_env", name)
        _check_arg_size(field, f"{name}={value}", "a variable (NAME=value)")
        result.append((name, name))
    total = sum(_text_bytes(k) + _text_bytes(v) for k, v in secret_environment.items())
    if total > MAX_SECRET_BYTES:
        raise ConfigurationError(
            "secret_environment",
            "values of at most 1 MiB in total (what a Secret holds)",
            size(total, up=True),
        )
    return result


# --- the whole Job ------------------------------------------------------------------------------


def check_job_size(job: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """Refuse a Job too big for the API server to store, naming the input that fills it.

    Args:
        job: The assembled Job.
        inputs: The inputs that may make it big, by the field an error names.

    Raises:
        ConfigurationError: If the Job's JSON exceeds ``MAX_OBJECT_BYTES``.
    """
    total = len(json.dumps(job, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if total <= MAX_OBJECT_BYTES:
        return
    shares = {
        field: len(json.dumps(value, separators=(",", ":"), default=str).encode())
        for field, value in inputs.items()
        if value
    }
    culprit = max(shares, key=lambda f: shares[f]) if shares else "settings"
    raise ConfigurationError(
        culprit,
        f"a Job of at most {size(MAX_OBJECT_BYTES)} as JSON (the API server stores objects of "
        "at most 1.5MiB, and its pod copies the template); pass large data in a file or a "
        "volume",
        f"a Job of {size(total, up=True)}",
        detail=f"{size(shares.get(culprit, 0), up=True)} of it from {culprit}",
    )
