"""Per-step settings of the Kubernetes Job step operator, and its component config.

ZenML's pattern: the component config (cluster-wide defaults, set once when the step operator is
registered) inherits the settings class, and a step overrides any field under
``settings={"step_operator.kubernetes_job": {...}}``.

This module is the one place for every default and every bound. Each field checks its own value
when the model is built: its type, its range (the API's int32 and int64 fields, exit codes,
GPU counts...) and its Kubernetes syntax (DNS names, label keys and values, quantities,
environment names, the override fields). A bad value raises ``ConfigurationError`` naming
``settings.<field>`` (``settings.labels['bad key']``, ``settings.tolerations[0].value``) before
anything else happens. What depends on several fields or on the step (the GPU label scheme and
model, MIG against the vendor, root under the restricted profile, names that would collide,
annotation sizes with the run's names, secret-looking variables) is checked once, by
``step_checks.validate_step``.

The runner reads its own fields (``pending_timeout``, ``queue_timeout``, ...,
``scale_up_timeout``, ``on_sigterm``) straight from these settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

from k8s_step_operator._errors import ConfigurationError, configuration_error
from k8s_step_operator._job.env import check_env_map, check_env_name_allowed
from k8s_step_operator._job.gpu import is_mig_profile, resolve_gpu_vendor
from k8s_step_operator._job.keys import (
    ANNOTATION_PREFIX,
    KUEUE_PRIORITY_CLASS_LABEL,
    KUEUE_QUEUE_LABEL,
    LABEL_MANAGED_BY,
    is_reserved_key,
)
from k8s_step_operator._job.kube_syntax import (
    MAX_INT32,
    MAX_INT64,
    check_dns_label,
    check_dns_subdomain,
    check_image,
    check_label_value,
    check_qualified_name,
    check_secret_key,
    is_dns_subdomain,
    is_label_value,
    json_copy,
)
from k8s_step_operator._job.overrides import (
    ALLOWED_CONTAINER_OVERRIDE_KEYS,
    ALLOWED_POD_SPEC_OVERRIDE_KEYS,
    check_container_overrides,
    check_pod_spec_overrides,
)
from k8s_step_operator._step_operator_api.base_settings import (
    BaseSettings,
    SettingsModel,
    SettingsValidationError,
    whole_number,
)
from k8s_step_operator._step_operator_api.base_step_operator import BaseStepOperatorConfig
from k8s_step_operator._step_operator_api.sizes import check_size

__all__ = [
    "ALLOWED_CONTAINER_OVERRIDE_KEYS",
    "ALLOWED_POD_SPEC_OVERRIDE_KEYS",
    "DEFAULT_NAMESPACE",
    "DEFAULT_RENDEZVOUS_PORT",
    "DEFAULT_RUN_AS_USER",
    "EXIT_CODE_RANGE",
    "MAX_ANNOTATION_BYTES",
    "MAX_CPU_CORES",
    "MAX_GPUS",
    "MAX_INT32",
    "MAX_INT64",
    "MAX_NODES",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorSettings",
    "SecretKeyRef",
    "Toleration",
    "annotation_bytes",
    "parse_settings",
]

# --- defaults the fields below do not carry ---------------------------------------------------
DEFAULT_NAMESPACE = "default"
# Under the restricted profile a step runs as this UID unless run_as_user says otherwise, so that
# images built to run as root still start.
DEFAULT_RUN_AS_USER = 1000

# --- bounds ----------------------------------------------------------------------------------
# MAX_INT32 and MAX_INT64, the API's integer types, are Kubernetes' rules (``kube_syntax``), which
# the pod-spec overrides check too.
# Far above any node; a typo (a memory size in GPUs) fails here instead of pending forever.
MAX_GPUS = 1_000_000
MAX_CPU_CORES = 1_000_000
# Ranks of one step. Kubernetes allows up to 10^5 pods in an Indexed Job; each rank's hostname is
# ``<job>-<index>`` (a DNS label), and the Job's name keeps room for four digits of index.
MAX_NODES = 10_000
# torchrun's default rendezvous port.
DEFAULT_RENDEZVOUS_PORT = 29500
# The API server's limit on all annotations of one object, keys and values together.
MAX_ANNOTATION_BYTES = 256 * 1024
# A container's exit status; 0 is success, and podFailurePolicy refuses it in onExitCodes.
EXIT_CODE_RANGE = (1, 255)

_AFFINITY_KEYS = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})
# What other tools call the number of pods of a step; num_nodes is this library's word.
_RANK_COUNT_WORDS = ("parallelism", "completions", "pod_count", "replicas", "nnodes")


# --- field types: each refuses a bad value with a ConfigurationError saying what is accepted ---


def _int_in(low: int, high: int, what: str) -> Any:
    def check(value: object) -> int:
        number = whole_number(value)
        if number is None or not low <= number <= high:
            raise ConfigurationError("", f"{what} from {low} to {high}", value)
        return number

    return BeforeValidator(check)


def _syntax(checker: Any) -> Any:
    return BeforeValidator(lambda value: checker("", value))


GPUCount = Annotated[int, Field(ge=0, le=MAX_GPUS), _int_in(0, MAX_GPUS, "a whole number of GPUs")]
ExitCode = Annotated[
    int,
    Field(ge=EXIT_CODE_RANGE[0], le=EXIT_CODE_RANGE[1]),
    _int_in(*EXIT_CODE_RANGE, "an exit code"),
]
UserId = Annotated[int, Field(ge=0, le=MAX_INT32), _int_in(0, MAX_INT32, "an id")]
NodeCount = Annotated[
    int, Field(ge=1, le=MAX_NODES), _int_in(1, MAX_NODES, "a whole number of nodes")
]
Port = Annotated[int, Field(ge=1, le=65535), _int_in(1, 65535, "a port number")]
DNSLabel = Annotated[str, _syntax(check_dns_label)]
DNSSubdomain = Annotated[str, _syntax(check_dns_subdomain)]
QualifiedName = Annotated[str, _syntax(check_qualified_name)]


def _image(value: object) -> object:
    if value is not None:
        check_image("", value)
    return value


def _mapping(value: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("", what, None)
    return value


def _user_key(field: str, key: object) -> None:
    check_qualified_name(field, key)  # type: ignore[arg-type]
    assert isinstance(key, str)
    if is_reserved_key(key):
        raise ConfigurationError(
            field,
            "a key outside those this library, Kubernetes and Kueue set (kubernetes.io/, "
            f"k8s.io/, {ANNOTATION_PREFIX}, {LABEL_MANAGED_BY}, {KUEUE_QUEUE_LABEL} - use "
            f"queue_name, {KUEUE_PRIORITY_CLASS_LABEL} - use workload_priority_class, and the "
            "AppArmor and seccomp annotations - the security profile sets those)",
            key,
        )


def _user_labels(value: object) -> object:
    for key, text in _mapping(value, "a mapping of label keys to label values").items():
        _user_key(f"[{key!r}]", key)
        check_label_value(f"[{key!r}]", text)
    return value


def annotation_bytes(annotations: Mapping[str, str]) -> int:
    """What ``annotations`` count against the API server's limit: keys and values, in UTF-8."""
    return sum(
        len(k.encode()) + len(v.encode("utf-8", "surrogatepass")) for k, v in annotations.items()
    )


def _user_annotations(value: object) -> object:
    data = _mapping(value, "a mapping of annotation keys to strings")
    for key, text in data.items():
        _user_key(f"[{key!r}]", key)
        if not isinstance(text, str):
            raise ConfigurationError(f"[{key!r}]", "a string", type(text).__name__)
    total = annotation_bytes(data)
    if total > MAX_ANNOTATION_BYTES:
        raise ConfigurationError(
            "", "annotations of at most 256 KiB in total, keys and values", f"{total} bytes"
        )
    return value


def _selector(value: object) -> object:
    # Selecting on labels others set is fine; only setting them is not.
    for key, text in _mapping(value, "a mapping of node label keys to values").items():
        check_qualified_name(f"[{key!r}]", key)
        check_label_value(f"[{key!r}]", text)
    return value


def _affinity(value: object) -> object:
    if value is None:
        return None
    data = _mapping(value, "a mapping with nodeAffinity, podAffinity or podAntiAffinity")
    for key, part in data.items():
        if key not in _AFFINITY_KEYS:
            raise ConfigurationError(
                f"[{key!r}]", "one of " + ", ".join(sorted(_AFFINITY_KEYS)), key
            )
        if not isinstance(part, Mapping):
            raise ConfigurationError(f"[{key!r}]", "a mapping", None)
    return json_copy("", dict(data))


def _positive_size(value: object) -> object:
    if value is not None:
        check_size("", value)
    return value


# --- parts --------------------------------------------------------------------------------------


class _Part(SettingsModel):
    """A value inside the settings; checks itself like the settings do."""


class Toleration(_Part):
    """A pod toleration (Kubernetes' ``Toleration`` with snake_case names)."""

    error_prefix: ClassVar[str] = "toleration"

    key: str = Field(default="", description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal (key and value match) or Exists (key matches)."
    )
    value: str = Field(default="", description="Taint value; empty with operator Exists.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: (
        Annotated[
            int,
            Field(ge=-MAX_INT64 - 1, le=MAX_INT64),
            _int_in(-MAX_INT64 - 1, MAX_INT64, "a number of seconds"),
        ]
        | None
    ) = Field(
        default=None, description="For NoExecute only: how long the pod stays after the taint."
    )

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> object:
        if value != "":
            check_qualified_name("", value)  # type: ignore[arg-type]
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: object) -> object:
        return check_label_value("", value)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if not self.key and self.operator != "Exists":
            raise ConfigurationError("operator", "'Exists' when key is empty", self.operator)
        if self.operator == "Exists" and self.value:
            raise ConfigurationError("value", "no value with operator 'Exists'", self.value)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ConfigurationError(
                "toleration_seconds", "only with effect 'NoExecute'", self.toleration_seconds
            )
        return self


class SecretKeyRef(_Part):
    """A reference to one key of a Secret in the Job's namespace."""

    error_prefix: ClassVar[str] = "secret_key_ref"

    name: DNSSubdomain = Field(description="The Secret's name (a DNS subdomain).")
    key: Annotated[str, _syntax(check_secret_key)] = Field(
        description="The key within the Secret ([-._a-zA-Z0-9], at most 253 characters)."
    )
    optional: bool = Field(default=False, description="Start the pod even if the key is missing.")


# --- the settings -------------------------------------------------------------------------------


class KubernetesJobStepOperatorSettings(BaseSettings):
    """How one step runs as a Kubernetes Job. Every field may be set per step."""

    secret_fields: ClassVar[tuple[str, ...]] = ("secret_env",)

    # --- where and what -----------------------------------------------------------------
    namespace: DNSLabel | None = Field(
        default=None,
        description="Namespace of the Job (a DNS label); None means kubectl's: the kubeconfig "
        "context's namespace, or the pod's ServiceAccount's in a cluster, else 'default'.",
    )
    image: Annotated[str, BeforeValidator(_image)] | None = Field(
        default=None,
        description="Container image of the step; None uses the image built for the step "
        "(StepRunInfo.get_image).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy; None lets Kubernetes decide."
    )
    image_pull_secrets: list[DNSSubdomain] = Field(
        default_factory=list, description="Names of docker-registry Secrets used to pull."
    )
    service_account_name: DNSSubdomain | None = Field(
        default=None, description="ServiceAccount of the step's pod; None uses 'default'."
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="Mount the ServiceAccount token into the step's pod (off: least privilege).",
    )

    # --- GPUs ---------------------------------------------------------------------------
    gpu_count: GPUCount | None = Field(
        default=None,
        description="Whole GPUs (or MIG slices); None uses ResourceSettings.gpu_count.",
    )
    gpu_vendor: str = Field(
        default="nvidia",
        description="nvidia, amd, intel, or an extended resource key such as example.com/fpga.",
    )
    gpu_type: str | None = Field(
        default=None,
        description="GPU model required on the node, in the label scheme's vocabulary "
        "(e.g. NVIDIA-H100-80GB-HBM3 for gpu-feature-discovery, nvidia-tesla-t4 for gke).",
    )
    gpu_label_scheme: str | None = Field(
        default=None,
        description="Which node label names the GPU model: gpu-feature-discovery "
        "(nvidia.com/gpu.product), amd-node-labeller (amd.com/gpu.product-name), gke "
        "(cloud.google.com/gke-accelerator), karpenter (karpenter.k8s.aws/instance-gpu-name), "
        "or a scheme of the operator's gpu_label_schemes; None picks the vendor's (nvidia: "
        "gpu-feature-discovery, amd: amd-node-labeller).",
    )
    gpu_label_key: QualifiedName | None = Field(
        default=None, description="A custom node label key for gpu_type; overrides the scheme."
    )
    mig_profile: str | None = Field(
        default=None,
        description="NVIDIA MIG profile such as 1g.5gb; requests nvidia.com/mig-<profile> "
        "instead of whole GPUs.",
    )
    gpu_tolerations: bool = Field(
        default=True,
        description="Tolerate the vendor's GPU taint (e.g. nvidia.com/gpu) when GPUs are "
        "requested.",
    )

    # --- several nodes ----------------------------------------------------------------------
    num_nodes: NodeCount = Field(
        default=1,
        description="Nodes (pods) the step runs on, each with the step's gpu_count GPUs. 1 is "
        "one pod; N > 1 is an Indexed Job of N ranks behind a headless Service, each rank told "
        "the rendezvous (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NNODES, NODE_RANK, "
        "NPROC_PER_NODE and torchrun's PET_ variables), admitted together and failed together.",
    )
    rendezvous_port: Port = Field(
        default=DEFAULT_RENDEZVOUS_PORT,
        description="Port on rank 0 where the ranks meet (MASTER_PORT); num_nodes > 1 only.",
    )
    topology: QualifiedName | None = Field(
        default=None,
        description="A node label naming a topology level (a block, a rack) that every rank "
        "must share; num_nodes > 1 only. With queue_name, Kueue's topology-aware scheduling "
        "places the ranks (the ClusterQueue's ResourceFlavor needs a Topology with this level); "
        "without, pod affinity on that label.",
    )
    topology_mode: Literal["required", "preferred"] = Field(
        default="required",
        description="required: the ranks run in one domain of the topology level or not at "
        "all; preferred: in one domain when they fit, else spread over the fewest.",
    )
    log_ranks: Literal["all", "first"] = Field(
        default="all",
        description="With num_nodes > 1, whose output is streamed: every rank's, each line "
        "prefixed with its rank (all), or rank 0's alone (first).",
    )

    # --- CPU, memory, shared memory -----------------------------------------------------------
    shm_size: Annotated[str, BeforeValidator(_positive_size)] | None = Field(
        default=None,
        description="Size of /dev/shm (an in-memory emptyDir), e.g. 16Gi or 16GiB; None keeps "
        "the container runtime's default (64 MiB).",
    )
    cpu_limit: bool = Field(
        default=False,
        description="Also limit CPU to ResourceSettings.cpu_count (off: request only, no "
        "throttling).",
    )

    # --- placement -------------------------------------------------------------------------
    node_selector: Annotated[dict[str, str], BeforeValidator(_selector)] = Field(
        default_factory=dict, description="Node labels the step's node must carry."
    )
    affinity: Annotated[dict[str, Any] | None, BeforeValidator(_affinity)] = Field(
        default=None,
        description="Kubernetes affinity (camelCase keys nodeAffinity, podAffinity, "
        "podAntiAffinity), passed through.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations (the GPU taint is added for you)."
    )
    priority_class_name: DNSSubdomain | None = Field(
        default=None, description="PriorityClass of the step's pod."
    )
    queue_name: str | None = Field(
        default=None,
        description=f"Kueue LocalQueue; labels the Job {KUEUE_QUEUE_LABEL} and creates it "
        "suspended for Kueue to admit.",
    )
    workload_priority_class: str | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass of the Job (a DNS subdomain of at most 63 "
        f"characters); labels the Job {KUEUE_PRIORITY_CLASS_LABEL}. Kueue orders and preempts "
        "workloads by it; priority_class_name is the pod's, for the scheduler.",
    )

    # --- metadata --------------------------------------------------------------------------
    labels: Annotated[dict[str, str], BeforeValidator(_user_labels)] = Field(
        default_factory=dict, description="Extra labels of the Job."
    )
    annotations: Annotated[dict[str, str], BeforeValidator(_user_annotations)] = Field(
        default_factory=dict, description="Extra annotations of the Job (at most 256 KiB)."
    )
    pod_labels: Annotated[dict[str, str], BeforeValidator(_user_labels)] = Field(
        default_factory=dict, description="Extra labels of the step's pod."
    )
    pod_annotations: Annotated[dict[str, str], BeforeValidator(_user_annotations)] = Field(
        default_factory=dict, description="Extra annotations of the step's pod (at most 256 KiB)."
    )

    # --- failure handling and lifetime ----------------------------------------------------------
    backoff_limit: Annotated[
        int, Field(ge=0, le=MAX_INT32), _int_in(0, MAX_INT32, "a number of retries")
    ] = Field(
        default=0, description="Pod retries after a failure (0: a failed step fails the Job)."
    )
    fail_on_exit_codes: list[ExitCode] = Field(
        default_factory=list,
        description="Exit codes (1-255) that fail the Job at once, without retries.",
    )
    ignore_disruptions: bool = Field(
        default=True,
        description="Do not count evictions and preemptions (DisruptionTarget) as failures.",
    )
    active_deadline_seconds: (
        Annotated[int, Field(ge=1, le=MAX_INT64), _int_in(1, MAX_INT64, "a number of seconds")]
        | None
    ) = Field(default=None, description="Fail the Job when it runs longer than this (seconds).")
    ttl_seconds_after_finished: (
        Annotated[int, Field(ge=0, le=MAX_INT32), _int_in(0, MAX_INT32, "a number of seconds")]
        | None
    ) = Field(default=600, description="Delete the finished Job and its pods after this (seconds).")

    # --- environment and secrets ---------------------------------------------------------------
    env: Annotated[dict[str, str], BeforeValidator(check_env_map)] = Field(
        default_factory=dict, description="Extra plain environment variables (no secrets)."
    )
    secret_env: dict[str, SecretKeyRef] = Field(
        default_factory=dict,
        description="Environment variables read from Secrets: NAME -> {name, key} (references "
        "only; values are never accepted).",
    )
    secret_env_from: list[DNSSubdomain] = Field(
        default_factory=list, description="Secrets whose every key becomes a variable (envFrom)."
    )
    allow_secret_like_env: bool = Field(
        default=False,
        description="Accept plain variables whose names look like secrets (TOKEN, PASSWORD, "
        "API_KEY...); off by default because anyone who can read Jobs reads them.",
    )

    # --- security --------------------------------------------------------------------------
    pod_security_profile: Literal["restricted", "none"] = Field(
        default="restricted",
        description="restricted: the Pod Security 'restricted' profile (non-root, no privilege "
        "escalation, all capabilities dropped, RuntimeDefault seccomp), and overrides that "
        "contradict it are refused; none: set nothing.",
    )
    run_as_user: UserId | None = Field(
        default=None,
        description=f"UID of the step; None means {DEFAULT_RUN_AS_USER} under the restricted "
        "profile, so images built to run as root still start.",
    )
    run_as_group: UserId | None = Field(default=None, description="GID of the step.")
    fs_group: UserId | None = Field(default=None, description="Group owning mounted volumes.")

    # --- escape hatch --------------------------------------------------------------------------
    pod_spec_overrides: Annotated[dict[str, Any], BeforeValidator(check_pod_spec_overrides)] = (
        Field(
            default_factory=dict,
            description="Pod-spec fields not modelled here (camelCase), checked, merged last; "
            "lists are appended. Allowed keys: "
            + ", ".join(sorted(ALLOWED_POD_SPEC_OVERRIDE_KEYS))
            + ".",
        )
    )
    container_overrides: Annotated[dict[str, Any], BeforeValidator(check_container_overrides)] = (
        Field(
            default_factory=dict,
            description="Container fields not modelled here (camelCase), checked, merged last; "
            "lists are appended. Allowed keys: "
            + ", ".join(sorted(ALLOWED_CONTAINER_OVERRIDE_KEYS))
            + ".",
        )
    )

    # --- how the runner waits (read by the submit/watch code) -------------------------------------
    queue_timeout: PositiveFloat | None = Field(
        default=None,
        description="Seconds the Job may stay queued (suspended, e.g. by Kueue) before the step "
        "fails; None waits.",
    )
    pending_timeout: PositiveFloat | None = Field(
        default=600,
        description="Seconds a pod may stay unschedulable before the step fails; None waits.",
    )
    scale_up_timeout: PositiveFloat | None = Field(
        default=900,
        description="Seconds a pod may wait for a cluster autoscaler to add a node for it "
        "(while the autoscaler says it is scaling up) before the step fails; None waits.",
    )
    image_pull_backoff_timeout: PositiveFloat | None = Field(
        default=300,
        description="Seconds to keep retrying a failing image pull; None waits. A pull that "
        "will not get better (no such host, connection refused, manifest unknown, access "
        "denied) fails within 30 s, or this if shorter.",
    )
    missing_config_grace: NonNegativeFloat = Field(
        default=30,
        description="Seconds to wait for a missing Secret or ConfigMap to appear before failing.",
    )
    safety_poll_interval: PositiveFloat = Field(
        default=60,
        description="Seconds between safety re-lists of the followed Jobs, next to the watch.",
    )
    stream_logs: bool = Field(default=True, description="Stream the step's log while it runs.")
    preflight_fit_check: bool = Field(
        default=True,
        description="When the pod is unschedulable, check whether any node could ever fit it "
        "and fail at once if none could, instead of after pending_timeout (needs read access "
        "to nodes; skipped with a warning without it).",
    )
    delete_on_cancel: bool = Field(
        default=True, description="Delete the Job (and free its GPUs) when the step is cancelled."
    )
    on_sigterm: Literal["delete", "detach"] = Field(
        default="delete",
        description="What a SIGTERM of the calling process does to the running Job: delete it "
        "(and free its GPUs), or detach and leave it running, so that a restarted caller "
        "reattaches to it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _ranks_by_another_name(cls, data: Any) -> Any:
        # Other tools' words for the number of pods: a setting here would contradict num_nodes.
        if isinstance(data, Mapping):
            for key in _RANK_COUNT_WORDS:
                # A subclass that declares one of these words as its own field (ZenML's drop-in
                # settings: pod_count) translates it itself.
                if key in data and key not in cls.model_fields:
                    raise ConfigurationError(
                        key,
                        "num_nodes for the number of nodes (pods) the step runs on, each with "
                        "gpu_count GPUs (this library sets the Job's parallelism and completions "
                        "from it)",
                        data[key],
                    )
        return data

    @field_validator("gpu_vendor", mode="before")
    @classmethod
    def _vendor(cls, value: object) -> object:
        if not isinstance(value, str):
            raise ConfigurationError("", "a GPU vendor name or an extended resource key", None)
        resolve_gpu_vendor("", value)
        return value

    @field_validator("gpu_type", mode="before")
    @classmethod
    def _gpu_type(cls, value: object) -> object:
        # The label value it becomes depends on the label scheme: checked with the scheme.
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError("", "a non-empty GPU model name", value)
        return value

    @field_validator("gpu_label_scheme", mode="before")
    @classmethod
    def _scheme_name(cls, value: object) -> object:
        # Whether it names a scheme is checked when the Job is built, against the table of
        # schemes the Job is built with.
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError("", "the name of a GPU label scheme", value)
        return value

    @field_validator("mig_profile", mode="before")
    @classmethod
    def _mig(cls, value: object) -> object:
        if value is not None and not is_mig_profile(value):  # type: ignore[arg-type]
            raise ConfigurationError(
                "", "a MIG profile '<slices>g.<memory>gb' such as '1g.5gb' or '3g.40gb'", value
            )
        return value

    @field_validator("queue_name", mode="before")
    @classmethod
    def _queue(cls, value: object) -> object:
        # Kueue's webhook refuses a queue name that is not a lowercase DNS-1123 subdomain; it is
        # also a label value (at most 63 characters).
        if value is None:
            return value
        if not isinstance(value, str) or not is_dns_subdomain(value) or len(value) > 63:
            raise ConfigurationError(
                "",
                "a LocalQueue name: lowercase [a-z0-9.-], alphanumeric at both ends, at most 63 "
                "characters",
                value,
            )
        return value

    @field_validator("workload_priority_class", mode="before")
    @classmethod
    def _workload_priority(cls, value: object) -> object:
        if value is not None:
            check_dns_subdomain("", value)  # type: ignore[arg-type]
            if not is_label_value(value):  # type: ignore[arg-type]
                raise ConfigurationError(
                    "",
                    "a WorkloadPriorityClass name of at most 63 characters (a label value)",
                    value,
                )
        return value

    @field_validator("secret_env", mode="before")
    @classmethod
    def _references_only(cls, value: object) -> object:
        refs: dict[str, SecretKeyRef] = {}
        for name, ref in _mapping(value, "a mapping of variable names to references").items():
            if isinstance(ref, str | bytes | int | float):
                # Never echo it: it is probably the secret.
                raise ConfigurationError(
                    "", f"{name!r} as a reference {{'name': <secret>, 'key': <key>}}, not a value"
                )
            field = f"[{name!r}]"
            check_env_name_allowed(field, name)
            if isinstance(ref, SecretKeyRef):
                refs[name] = ref
                continue
            try:
                refs[name] = SecretKeyRef.model_validate(ref)
            except SettingsValidationError as exc:
                # Named like the other mappings: secret_env['NAME'].key.
                part = exc.field.removeprefix(SecretKeyRef.error_prefix)
                raise ConfigurationError(field + part, exc.accepted, exc.value) from None
        return refs


class KubernetesJobStepOperatorConfig(BaseStepOperatorConfig, KubernetesJobStepOperatorSettings):
    """Cluster-wide defaults of the step operator, plus how to reach the cluster."""

    error_prefix: ClassVar[str] = "config"

    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file; None uses KUBECONFIG or ~/.kube/config."
    )
    kubernetes_context: str | None = Field(
        default=None, description="Kubeconfig context; None uses the current context."
    )
    incluster: bool | None = Field(
        default=None,
        description="True: the pod's ServiceAccount; False: a kubeconfig; None: found as kubectl "
        "and the usual clients find it ($KUBECONFIG, ~/.kube/config, then in-cluster).",
    )

    @property
    def is_remote(self) -> bool:
        """Steps run on the cluster, not on the caller's machine."""
        return True


def parse_settings(data: Any, prefix: str = "settings") -> KubernetesJobStepOperatorSettings:
    """Build settings from a mapping, raising ``ConfigurationError`` naming the field.

    Raises:
        ConfigurationError: If ``data`` is not a valid settings mapping.
    """
    try:
        return KubernetesJobStepOperatorSettings.model_validate(data)
    except SettingsValidationError as exc:
        if prefix == KubernetesJobStepOperatorSettings.error_prefix:
            raise
        secret = KubernetesJobStepOperatorSettings.secret_fields
        raise configuration_error(exc, prefix, secret_fields=secret) from exc.__cause__
