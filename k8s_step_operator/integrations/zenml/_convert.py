"""ZenML's objects turned into the core's inputs: the one place that knows both shapes.

Nothing here talks to Kubernetes or decides anything about a Job; it only says which step run a
ZenML object names, which settings, resources, image and environment it carries, and what local
mode adds to the settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from k8s_step_operator import (
    ConfigurationError,
    PipelineConfiguration,
    StepConfiguration,
    StepIdentity,
)
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings
from k8s_step_operator import ResourceSettings as CoreResources
from k8s_step_operator import StepRunInfo as CoreStepRunInfo
from k8s_step_operator._job.env import is_secret_like
from k8s_step_operator._job.spec import IMAGE_KEY
from k8s_step_operator.integrations.zenml import _compat

if TYPE_CHECKING:
    from zenml.config.resource_settings import ResourceSettings
    from zenml.config.step_run_info import StepRunInfo
    from zenml.models import StepRunResponse

    from k8s_step_operator.integrations.zenml.config import KubernetesJobStepOperatorSettings

__all__ = [
    "ALWAYS_SECRET",
    "IMAGE_KEY",
    "LOCAL_STORES_VOLUME",
    "core_resources",
    "core_settings",
    "from_step_run_info",
    "identity",
    "image_for",
    "local_mode_settings",
    "split_environment",
    "step_pod_defaults",
    "translated",
]

# The store's API token that ZenML mints for the run: never a plain variable of the Job.
ALWAYS_SECRET = frozenset({"ZENML_STORE_API_TOKEN"})
LOCAL_STORES_VOLUME = "zenml-local-stores"
ENV_LOCAL_STORES_PATH = "ZENML_LOCAL_STORES_PATH"


def split_environment(environment: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """ZenML's environment as (plain, secret) variables; every value reaches the step unchanged.

    The store's API token, and any variable the core would refuse as a plain one because it
    looks like a credential (``ZENML_STORE_PASSWORD``...), go into the Job's own Secret.
    """
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in environment.items():
        text = str(value)
        if name in ALWAYS_SECRET or is_secret_like(name, text):
            secret[name] = text
        else:
            plain[name] = text
    return plain, secret


def translated(settings: KubernetesJobStepOperatorSettings) -> _compat.Translation:
    """``settings`` in the core's fields, ZenML's kubernetes operator's fields translated.

    Raises:
        ConfigurationError: Naming the field as the user wrote it.
    """
    from k8s_step_operator.integrations.zenml.config import translated

    return translated(settings)


def step_pod_defaults(settings: CoreSettings) -> CoreSettings:
    """What a ZenML step's pod needs besides the core's defaults, unless the settings say.

    ZenML's step entrypoint is the container's first process, and the first process of a PID
    namespace ignores SIGTERM unless it handles it; ZenML's does not. A stopped run's step would
    then hold its GPUs for the whole grace period (30 s) before the kubelet kills it. With the
    pod's process namespace shared, the pause process is the first one and the step gets
    Python's default: it exits on SIGTERM at once.
    """
    if "shareProcessNamespace" in settings.pod_spec_overrides:
        return settings
    data = settings.model_dump(exclude_unset=True)
    data["pod_spec_overrides"] = {**settings.pod_spec_overrides, "shareProcessNamespace": True}
    return CoreSettings.model_validate(data)


def core_settings(settings: KubernetesJobStepOperatorSettings) -> CoreSettings:
    """The core's own settings object with the same fields set (ZenML's translated)."""
    translation = translated(settings)
    return CoreSettings.model_validate(translation.settings)


def core_resources(
    resources: ResourceSettings, from_pod_settings: Mapping[str, Any] | None = None
) -> CoreResources:
    """CPU, GPUs and memory, the fields a Job requests; ZenML's resource pools play no part.

    ``from_pod_settings`` are the same read from ZenML's ``pod_settings.resources``; a value set
    in both places must agree.

    Raises:
        ConfigurationError: If the two give different values for one resource.
    """
    values: dict[str, Any] = {
        "cpu_count": resources.cpu_count,
        "gpu_count": resources.gpu_count,
        "memory": resources.memory,
    }
    for name, value in (from_pod_settings or {}).items():
        mine = values[name]
        same = (
            _compat.memory_bytes(mine) == _compat.memory_bytes(value)
            if name == "memory" and mine is not None
            else mine is None or float(mine) == float(value)
        )
        if not same:
            raise ConfigurationError(
                f"resource_settings.{name}",
                f"the value pod_settings.resources gives ({value}), or only one of the two",
                mine,
            )
        values[name] = value
    return CoreResources(**values)


def image_for(info: StepRunInfo, settings: CoreSettings) -> str:
    """``settings.image``, else the snapshot's build for this flavor, else a skip-build image.

    Dynamic pipelines run by the local orchestrator have no build at all; a step whose
    ``DockerSettings(parent_image=X, skip_build=True)`` names its image still runs in X.
    """
    if settings.image:
        return settings.image
    try:
        return info.get_image(IMAGE_KEY)
    except (RuntimeError, KeyError):
        docker = info.config.docker_settings
        if docker.skip_build and docker.parent_image:
            return docker.parent_image
        raise


def from_step_run_info(
    info: StepRunInfo,
    settings: CoreSettings,
    from_pod_settings: Mapping[str, Any] | None = None,
) -> CoreStepRunInfo:
    """The core's step run for ZenML's: ids, names, resources and image.

    Raises:
        ConfigurationError: If ``ResourceSettings`` and ``pod_settings.resources`` disagree.
    """
    return CoreStepRunInfo(
        step_run_id=str(info.step_run_id),
        run_id=str(info.run_id),
        run_name=info.run_name,
        pipeline_step_name=info.pipeline_step_name,
        config=StepConfiguration(
            name=info.pipeline_step_name,
            resource_settings=core_resources(info.config.resource_settings, from_pod_settings),
        ),
        pipeline=PipelineConfiguration(name=info.pipeline.name or ""),
        images={IMAGE_KEY: image_for(info, settings)},
    )


def identity(step_run: StepRunResponse) -> StepIdentity:
    """Which Job a ZenML step run has: its run, its invocation id and its own id.

    ``StepRunResponse.name`` is the invocation id, which ``StepRunInfo.pipeline_step_name`` was
    when the Job was submitted; each retry of a step is a new step run, so a new Job.
    """
    return StepIdentity(str(step_run.pipeline_run_id), str(step_run.name), str(step_run.id))


def local_mode_settings(
    settings: KubernetesJobStepOperatorSettings,
    *,
    claim: str,
    stores_path: str,
    uid: int,
    gid: int,
) -> KubernetesJobStepOperatorSettings:
    """Local mode through the core's own settings.

    The claim is mounted at ``stores_path``, the path the directory has on this machine (the
    SQLite store's URL and the artifact store's path name it), ``ZENML_LOCAL_STORES_PATH`` tells
    ZenML in the pod where it is, and the pod runs as ``uid``/``gid`` unless the settings name a
    user: files this machine's user made are the step's to write.
    """
    volume = {"name": LOCAL_STORES_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
    mount = {"name": LOCAL_STORES_VOLUME, "mountPath": stores_path}
    pod = dict(settings.pod_spec_overrides)
    container = dict(settings.container_overrides)
    data = settings.model_dump(exclude_unset=True)
    data["pod_spec_overrides"] = {**pod, "volumes": [*pod.get("volumes", []), volume]}
    data["container_overrides"] = {
        **container,
        "volumeMounts": [*container.get("volumeMounts", []), mount],
    }
    data["env"] = {**settings.env, ENV_LOCAL_STORES_PATH: stores_path}
    if settings.run_as_user is None:
        data["run_as_user"] = uid
    if settings.run_as_group is None:
        data["run_as_group"] = gid
    return type(settings).model_validate(data)
