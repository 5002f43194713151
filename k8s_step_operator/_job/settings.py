"""Per-step settings of the Kubernetes Job step operator, and its component config.

ZenML's pattern: the component config (cluster-wide defaults, set once when the step operator is
registered) inherits the settings class, and a step overrides any field under
``settings={"step_operator.kubernetes_job": {...}}``.

Validation happens in two places, deliberately:

* the models check types and ranges (pydantic ``ValidationError`` at construction; the operator
  and the CLI translate it into ``ConfigurationError`` naming ``settings.<field>``);
* ``build_job`` checks Kubernetes' syntax and the rules between fields (label keys, quantities,
  vendors, MIG, reserved environment variables...) and raises ``ConfigurationError``.

Both happen before anything is sent to the cluster.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from k8s_step_operator._api.base_settings import BaseSettings, SettingsValidationError
from k8s_step_operator._api.base_step_operator import BaseStepOperatorConfig
from k8s_step_operator._errors import configuration_error

__all__ = [
    "ALLOWED_CONTAINER_OVERRIDE_KEYS",
    "ALLOWED_POD_SPEC_OVERRIDE_KEYS",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorSettings",
    "SecretKeyRef",
    "Toleration",
    "parse_settings",
]

# Pod-spec fields the settings do not model. Fields the builder sets (containers, restartPolicy,
# securityContext, nodeSelector, tolerations, ...) are refused so the settings stay the single
# source for them; `privileged` lives in container securityContext and is never reachable.
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
        "preemptionPolicy",
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


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Toleration(_Part):
    """A pod toleration (Kubernetes' ``Toleration`` with snake_case names)."""

    key: str = Field(default="", description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(
        default="Equal", description="Equal (key and value match) or Exists (key matches)."
    )
    value: str = Field(default="", description="Taint value; empty with operator Exists.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute only: how long the pod stays after the taint."
    )


class SecretKeyRef(_Part):
    """A reference to one key of a Secret in the Job's namespace."""

    name: str = Field(description="The Secret's name.")
    key: str = Field(description="The key within the Secret.")
    optional: bool = Field(default=False, description="Start the pod even if the key is missing.")


class KubernetesJobStepOperatorSettings(BaseSettings):
    """How one step runs as a Kubernetes Job. Every field may be set per step."""

    secret_fields: ClassVar[tuple[str, ...]] = ("secret_env",)

    # --- where and what -----------------------------------------------------------------
    namespace: str | None = Field(
        default=None, description="Namespace of the Job; None means 'default'."
    )
    image: str | None = Field(
        default=None,
        description="Container image of the step; None uses the image built for the step "
        "(StepRunInfo.get_image).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy; None lets Kubernetes decide."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of docker-registry Secrets used to pull."
    )
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount of the step's pod; None uses 'default'."
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="Mount the ServiceAccount token into the step's pod (off: least privilege).",
    )

    # --- GPUs ---------------------------------------------------------------------------
    gpu_count: NonNegativeInt | None = Field(
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
        "or a registered scheme; None picks the vendor's (nvidia: gpu-feature-discovery, amd: "
        "amd-node-labeller).",
    )
    gpu_label_key: str | None = Field(
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

    # --- CPU, memory, shared memory -----------------------------------------------------------
    shm_size: str | None = Field(
        default=None,
        description="Size of /dev/shm (an in-memory emptyDir), e.g. 1Gi; None keeps the "
        "container runtime's default (64 MiB).",
    )
    cpu_limit: bool = Field(
        default=False,
        description="Also limit CPU to ResourceSettings.cpu_count (off: request only, no "
        "throttling).",
    )

    # --- placement -------------------------------------------------------------------------
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the step's node must carry."
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Kubernetes affinity (camelCase keys nodeAffinity, podAffinity, "
        "podAntiAffinity), passed through.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra tolerations (the GPU taint is added for you)."
    )
    priority_class_name: str | None = Field(
        default=None, description="PriorityClass of the step's pod."
    )
    queue_name: str | None = Field(
        default=None,
        description="Kueue LocalQueue; labels the Job kueue.x-k8s.io/queue-name and creates it "
        "suspended for Kueue to admit.",
    )

    # --- metadata --------------------------------------------------------------------------
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels of the Job.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations of the Job."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels of the step's pod."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations of the step's pod."
    )

    # --- failure handling and lifetime ----------------------------------------------------------
    backoff_limit: NonNegativeInt = Field(
        default=0, description="Pod retries after a failure (0: a failed step fails the Job)."
    )
    fail_on_exit_codes: list[int] = Field(
        default_factory=list,
        description="Exit codes (1-255) that fail the Job at once, without retries.",
    )
    ignore_disruptions: bool = Field(
        default=True,
        description="Do not count evictions and preemptions (DisruptionTarget) as failures.",
    )
    active_deadline_seconds: PositiveInt | None = Field(
        default=None, description="Fail the Job when it runs longer than this (seconds)."
    )
    ttl_seconds_after_finished: NonNegativeInt | None = Field(
        default=600, description="Delete the finished Job and its pods after this (seconds)."
    )

    # --- environment and secrets ---------------------------------------------------------------
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra plain environment variables (no secrets)."
    )
    secret_env: dict[str, SecretKeyRef] = Field(
        default_factory=dict,
        description="Environment variables read from Secrets: NAME -> {name, key} (references "
        "only; values are never accepted).",
    )
    secret_env_from: list[str] = Field(
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
        "escalation, all capabilities dropped, RuntimeDefault seccomp); none: set nothing.",
    )
    run_as_user: NonNegativeInt | None = Field(
        default=None,
        description="UID of the step; None means 1000 under the restricted profile, so images "
        "built to run as root still start.",
    )
    run_as_group: NonNegativeInt | None = Field(default=None, description="GID of the step.")
    fs_group: NonNegativeInt | None = Field(
        default=None, description="Group owning mounted volumes."
    )

    # --- escape hatch --------------------------------------------------------------------------
    pod_spec_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Pod-spec fields not modelled here (camelCase), merged last; lists are "
        "appended. Allowed keys: " + ", ".join(sorted(ALLOWED_POD_SPEC_OVERRIDE_KEYS)) + ".",
    )
    container_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Container fields not modelled here (camelCase), merged last; lists are "
        "appended. Allowed keys: " + ", ".join(sorted(ALLOWED_CONTAINER_OVERRIDE_KEYS)) + ".",
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
    image_pull_backoff_timeout: PositiveFloat | None = Field(
        default=300, description="Seconds to keep retrying a failing image pull; None waits."
    )
    missing_config_grace: NonNegativeFloat = Field(
        default=30,
        description="Seconds to wait for a missing Secret or ConfigMap to appear before failing.",
    )
    safety_poll_interval: PositiveFloat = Field(
        default=60,
        description="Seconds between safety re-lists of the namespace's Jobs, next to the watch.",
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

    @field_validator("secret_env", mode="before")
    @classmethod
    def _references_only(cls, value: object) -> object:
        if isinstance(value, dict):
            for name, ref in value.items():
                if isinstance(ref, str | bytes | int | float):
                    raise ValueError(
                        f"secret_env[{name!r}] must be a reference {{'name': <secret>, "
                        "'key': <key>}, not a value"
                    )
        return value

    @field_validator("gpu_count", "backoff_limit", mode="before")
    @classmethod
    def _no_bools(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("a whole number, not a boolean")
        return value


class KubernetesJobStepOperatorConfig(BaseStepOperatorConfig, KubernetesJobStepOperatorSettings):
    """Cluster-wide defaults of the step operator, plus how to reach the cluster."""

    error_prefix: ClassVar[str] = "config"

    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file; None uses KUBECONFIG or ~/.kube/config."
    )
    kubernetes_context: str | None = Field(
        default=None, description="Kubeconfig context; None uses the current context."
    )
    incluster: bool = Field(
        default=False, description="Use the pod's ServiceAccount instead of a kubeconfig."
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
