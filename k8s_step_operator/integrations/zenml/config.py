"""ZenML's settings and config classes, carrying the core's fields (none is declared twice).

``KubernetesJobStepOperatorSettings`` is ZenML's ``BaseSettings`` and the core's settings model at
once: a step sets any core field under ``settings={"step_operator:<component name>": {...}}`` (or
the flavor key ``"step_operator.kubernetes_job"``), with the core's checks and messages. Unknown
keys stay an error, as in the core: a typo in a step's settings stops the pipeline's compilation
instead of being dropped with a warning.

The settings also take the fields of ZenML's own ``kubernetes`` step operator under its names
(``pod_settings``, ``privileged``, ``pod_count``...), so that a pipeline written for that
operator runs here with only the component changed: ``_compat`` translates them into the core's
fields, or refuses what is not honoured under ZenML's name, when the settings are made (a
pipeline's compilation, before anything is sent).

``KubernetesJobStepOperatorConfig`` is what ``zenml step-operator register NAME
--flavor=kubernetes_job --namespace=ml --gpu_type=H100 ...`` stores: every settings field as the
component's default for its steps, plus how to reach the cluster and the local mode.

pydantic takes ``model_config`` from the last base that sets it, and ZenML reads ``is_remote`` and
``is_local`` from the first class of the MRO that defines them: both are set here explicitly.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import ConfigDict, Field, field_validator, model_validator
from zenml.config.base_settings import BaseSettings as ZenMLBaseSettings
from zenml.step_operators import BaseStepOperatorConfig

from k8s_step_operator import ConfigurationError
from k8s_step_operator import KubernetesJobStepOperatorConfig as CoreConfig
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings
from k8s_step_operator._job.settings import DNSSubdomain
from k8s_step_operator.integrations.zenml import _compat

__all__ = [
    "CLUSTER_ACCESS_FIELDS",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorSettings",
]

# The core config's own fields (how to reach the cluster), besides the settings.
CLUSTER_ACCESS_FIELDS = ("kubeconfig_path", "kubernetes_context", "incluster")


def _core_description(name: str) -> str | None:
    return CoreConfig.model_fields[name].description


class KubernetesJobStepOperatorSettings(ZenMLBaseSettings, CoreSettings):
    """How one step runs as a Kubernetes Job: every field of the core's settings, per step.

    Set them under ``"step_operator:<component name>"`` or ``"step_operator.kubernetes_job"`` in
    a step's (or the pipeline's) settings; they override the component's config field by field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # -- ZenML's own kubernetes step operator's fields (translated, or refused by name) -------
    pod_settings: dict[str, Any] | None = Field(
        default=None,
        description="ZenML's KubernetesPodSettings (node_selectors, affinity, tolerations, "
        "resources, annotations, labels, volumes, volume_mounts, scheduler_name, "
        "image_pull_secrets, env, env_from, container_security_context, "
        "additional_pod_spec_args), translated into this operator's settings; what it cannot "
        "honour is refused by name.",
    )
    pod_count: int = Field(
        default=1,
        description="ZenML's pod_count: the number of nodes (pods) the step runs on, as num_nodes.",
    )
    privileged: bool = Field(
        default=False, description="ZenML's privileged: only False (never a privileged step)."
    )
    job_name_prefix: str | None = Field(
        default=None, description="ZenML's job_name_prefix: only None (use labels)."
    )
    fail_on_container_waiting_reasons: list[str] | None = Field(
        default_factory=lambda: list(_compat.ZENML_DEFAULTS["fail_on_container_waiting_reasons"]),
        description="ZenML's fail_on_container_waiting_reasons: only its default (see "
        "image_pull_backoff_timeout and missing_config_grace).",
    )
    api_request_timeout: float | None = Field(
        default=None, description="ZenML's api_request_timeout: only None."
    )
    max_api_retries: int = Field(default=3, description="ZenML's max_api_retries: only 3.")
    pod_startup_timeout: float | None = Field(
        default=None, description="Deprecated in ZenML: only None (use pending_timeout)."
    )
    pod_failure_max_retries: int | None = Field(
        default=None, description="Deprecated in ZenML: only None (use the step's retry)."
    )
    pod_failure_retry_delay: float | None = Field(
        default=None, description="Deprecated in ZenML: only None (use the step's retry)."
    )
    pod_failure_backoff: float | None = Field(
        default=None, description="Deprecated in ZenML: only None (use the step's retry)."
    )

    @field_validator("pod_settings", mode="before")
    @classmethod
    def _plain_pod_settings(cls, value: object) -> object:
        # A KubernetesPodSettings object, Kubernetes client models inside, or JSON text.
        if isinstance(value, str):
            return _compat.as_plain(_compat.parse_json(value))
        return _compat.as_plain(value)

    @model_validator(mode="after")
    def _zenml_kubernetes_fields(self) -> Self:
        if _compat.ZENML_FIELDS_SET & self.model_fields_set:
            translated(self, prefix="")
        return self


def translated(
    settings: KubernetesJobStepOperatorSettings, *, prefix: str = "settings."
) -> _compat.Translation:
    """ZenML's fields of ``settings`` in the core's, checked by the core's settings model.

    Raises:
        ConfigurationError: Naming the field as the user wrote it (ZenML's name for a
            translated value), prefixed by ``prefix``.
    """
    data = settings.model_dump(
        exclude_unset=True, include=set(CoreSettings.model_fields) | _compat.ZENML_FIELDS_SET
    )
    translation = _compat.translate(data)
    try:
        CoreSettings.model_validate(translation.settings)
    except ConfigurationError as e:
        raise _compat.rename(e, translation.origins, prefix) from e
    return translation


class KubernetesJobStepOperatorConfig(BaseStepOperatorConfig, KubernetesJobStepOperatorSettings):
    """The step operator component: defaults of every step's settings, cluster access, local mode.

    Local mode is for a ZenML without a server (a SQLite store and a local artifact store): the
    step pods mount the directory holding ZenML's local stores, through ``local_stores_claim``,
    at the path it has on this machine, and run as this process's user so that they can write
    there. With a ZenML server the pods reach the server instead, and no volume is involved.
    """

    # ZenML refuses unknown keys at registration; a stored key a later version dropped must
    # still load.
    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)

    error_prefix: ClassVar[str] = "config"

    kubeconfig_path: str | None = Field(
        default=None, description=_core_description("kubeconfig_path")
    )
    kubernetes_context: str | None = Field(
        default=None, description=_core_description("kubernetes_context")
    )
    incluster: bool | None = Field(default=None, description=_core_description("incluster"))
    local: bool = Field(
        default=False,
        description="Local mode: the step pods see this machine's ZenML local stores (SQLite "
        "store, local artifact store) through local_stores_claim, at the same path, and run as "
        "this process's UID and GID unless run_as_user / run_as_group say otherwise.",
    )
    local_stores_claim: DNSSubdomain | None = Field(
        default=None,
        description="Local mode: the PersistentVolumeClaim, in the steps' namespace, whose "
        "volume is the directory of ZenML's local stores on this machine.",
    )

    @property
    def is_remote(self) -> bool:
        """Steps run in pods that need a ZenML server, unless they share the local stores."""
        return not self.local

    @property
    def is_local(self) -> bool:
        """In local mode the component relies on this machine's files."""
        return self.local
