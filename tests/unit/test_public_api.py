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
    "GPU_LABEL_SCHEMES",
    "AdmissionRejectedError",
    "Admitted",
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
    "Event",
    "ExecutionStatus",
    "FieldCause",
    "Finished",
    "ForbiddenError",
    "GPULabelScheme",
    "Heartbeat",
    "ImageError",
    "InvalidError",
    "KubernetesJobStepOperator",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorFlavor",
    "KubernetesJobStepOperatorSettings",
    "LogLine",
    "NameCollisionError",
    "NotFoundError",
    "OOMKilledError",
    "Phase",
    "PhaseChanged",
    "PipelineConfiguration",
    "Preempted",
    "Problem",
    "QueueError",
    "RanksPlaced",
    "ResourceSettings",
    "Retrying",
    "SecretKeyRef",
    "ServerUnavailableError",
    "StackComponentType",
    "StepCancelledError",
    "StepConfiguration",
    "StepEntrypointConfiguration",
    "StepError",
    "StepEvent",
    "StepFailedError",
    "StepIdentity",
    "StepOperatorEntrypointConfiguration",
    "StepOperatorError",
    "StepRun",
    "StepRunInfo",
    "Submitted",
    "Timeline",
    "Toleration",
    "TooManyRequestsError",
    "UnschedulableError",
    "build_job",
    "job_name",
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


def _modules(path: list[str], prefix: str) -> list[str]:
    """Every module under ``path``, found on disk; integrations are named but never imported.

    An integration imports its framework (``integrations.zenml`` imports ZenML, which may not be
    installed), and importing it would import that framework; ``pkgutil.walk_packages`` imports
    every package it descends into.
    """
    import pkgutil

    names: list[str] = []
    for info in pkgutil.iter_modules(path, prefix):
        names.append(info.name)
        if info.ispkg and info.name != "k8s_step_operator.integrations":
            finder = info.module_finder
            sub = Path(getattr(finder, "path", "")) / info.name.rsplit(".", 1)[1]
            names += _modules([str(sub)], info.name + ".")
    return names


def test_every_other_module_is_private_by_name() -> None:
    public: list[str] = []
    for name in _modules(list(k8s_step_operator.__path__), "k8s_step_operator."):
        parts = name.split(".")[1:]
        if name in PUBLIC_MODULES or parts[0] == "integrations":
            continue
        if not any(part.startswith("_") for part in parts):
            public.append(name)
    assert public == []


def test_the_walk_sees_every_layer() -> None:
    names = _modules(list(k8s_step_operator.__path__), "k8s_step_operator.")
    for expected in ("k8s_step_operator._job.builder", "k8s_step_operator._runner.step_run"):
        assert expected in names


def test_the_core_imports_without_zenml() -> None:
    import subprocess
    import sys

    # A fresh interpreter where `import zenml` fails, whatever is installed here.
    code = (
        "import sys; sys.modules['zenml'] = None\n"
        "import k8s_step_operator, k8s_step_operator.cli, k8s_step_operator.entrypoint\n"
        "import k8s_step_operator.integrations\n"
        "try:\n"
        "    import k8s_step_operator.integrations.zenml\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "refused: k8s_step_operator.integrations.zenml needs ZenML" in out.stdout
