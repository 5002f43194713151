import tomllib
from pathlib import Path

import k8s_step_operator
from k8s_step_operator import (
    BaseStepOperator,
    BaseStepOperatorConfig,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorFlavor,
    KubernetesJobStepOperatorSettings,
    StackComponentType,
    StepOperatorEntrypointConfiguration,
)

EXPECTED_ALL = [
    "AdmissionRejectedError",
    "ApiError",
    "BaseEntrypointConfiguration",
    "BaseSettings",
    "BaseStepOperator",
    "BaseStepOperatorConfig",
    "BaseStepOperatorFlavor",
    "ByteUnit",
    "ConfigurationError",
    "ConflictError",
    "ContainerConfigError",
    "DeadlineExceededError",
    "DeletedExternallyError",
    "ExecutionStatus",
    "FieldCause",
    "ForbiddenError",
    "GPULabelScheme",
    "ImageError",
    "InvalidError",
    "KubernetesJobStepOperator",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorFlavor",
    "KubernetesJobStepOperatorSettings",
    "NameCollisionError",
    "NotFoundError",
    "OOMKilledError",
    "PipelineConfiguration",
    "QueueError",
    "ResourceSettings",
    "SecretKeyRef",
    "ServerUnavailableError",
    "StackComponentType",
    "StepCancelledError",
    "StepConfiguration",
    "StepEntrypointConfiguration",
    "StepError",
    "StepFailedError",
    "StepOperatorEntrypointConfiguration",
    "StepOperatorError",
    "StepRunInfo",
    "Toleration",
    "TooManyRequestsError",
    "UnschedulableError",
    "build_job",
    "job_name",
    "register_gpu_label_scheme",
    "same_step",
]


def test_all_is_pinned() -> None:
    assert k8s_step_operator.__all__ == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(k8s_step_operator, name), name


def test_flavor_names_the_operator_and_its_config() -> None:
    flavor = KubernetesJobStepOperatorFlavor()
    assert flavor.name == "kubernetes_job"
    assert flavor.type is StackComponentType.STEP_OPERATOR
    assert flavor.config_class is KubernetesJobStepOperatorConfig
    assert flavor.implementation_class is KubernetesJobStepOperator
    assert issubclass(flavor.config_class, BaseStepOperatorConfig)
    assert issubclass(flavor.config_class, KubernetesJobStepOperatorSettings)
    assert issubclass(flavor.implementation_class, BaseStepOperator)


def test_entry_point_declared_for_the_flavor() -> None:
    pyproject = tomllib.loads(
        (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    )
    entry = pyproject["project"]["entry-points"]["k8s_step_operator.flavors"]["kubernetes_job"]
    module, _, attr = entry.partition(":")
    assert module == "k8s_step_operator"
    assert attr == KubernetesJobStepOperatorFlavor.__name__


def test_operator_defaults() -> None:
    op = KubernetesJobStepOperator()
    assert op.type is StackComponentType.STEP_OPERATOR
    assert op.flavor == "kubernetes_job"
    assert op.settings_key == "step_operator.kubernetes_job"
    assert op.entrypoint_config_class is StepOperatorEntrypointConfiguration
    assert op.config.is_remote
    assert op.config.namespace is None


def test_base_step_operator_is_abstract() -> None:
    import pytest

    with pytest.raises(TypeError):
        BaseStepOperator("x", BaseStepOperatorConfig(), flavor="x")  # type: ignore[abstract]


# Modules a user may import by name: the package, the command line, the container's entrypoint
# program, and the integrations. Everything else is private by its name.
PUBLIC_MODULES = {"k8s_step_operator", "k8s_step_operator.cli", "k8s_step_operator.entrypoint"}


def test_every_other_module_is_private_by_name() -> None:
    import pkgutil

    public: list[str] = []
    for info in pkgutil.walk_packages(k8s_step_operator.__path__, "k8s_step_operator."):
        parts = info.name.split(".")[1:]
        if info.name in PUBLIC_MODULES or parts[0] == "integrations":
            continue
        if not any(part.startswith("_") for part in parts):
            public.append(info.name)
    assert public == []
