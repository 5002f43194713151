"""Settings under a key meant for this step operator but not one of its own are refused by name."""

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    StepConfiguration,
)
from k8s_step_operator._step_operator_api.settings_keys import misdirected_keys

GPU = {"gpu_type": "NVIDIA-H100-80GB-HBM3"}


def operator() -> KubernetesJobStepOperator:
    return KubernetesJobStepOperator("gpu-jobs", config=KubernetesJobStepOperatorConfig())


@pytest.mark.parametrize(
    "key",
    [
        "step_operator.kubernetes-job",
        "step_operator.kubernetes_jobs",
        "kubernetes_job",
        "kubernetes-job",
        "step_operator:gpu-jobz",
        "step_operator:other-operator",
        "step-operator.kubernetes_job",
        "StepOperator.kubernetes_job",
        "step_operators:gpu-jobs",
        "gpu-jobs",
    ],
)
def test_a_mistyped_key_is_refused_naming_the_keys_that_work(key: str) -> None:
    # Its gpu_type used to vanish, and the step landed on any GPU node.
    with pytest.raises(ConfigurationError) as exc:
        operator().get_settings(StepConfiguration(settings={key: GPU}))
    assert exc.value.field == f"settings[{key!r}]"
    assert "'step_operator:gpu-jobs' or 'step_operator.kubernetes_job'" in exc.value.accepted


@pytest.mark.parametrize(
    "key", ["step_operator:gpu-jobs", "step_operator.kubernetes_job", "step_operator"]
)
def test_each_of_its_own_keys_is_read(key: str) -> None:
    settings = operator().get_settings(StepConfiguration(settings={key: GPU}))
    assert settings.gpu_type == GPU["gpu_type"]


def test_two_of_its_keys_at_once_are_refused() -> None:
    both = {"step_operator:gpu-jobs": GPU, "step_operator.kubernetes_job": {"gpu_count": 1}}
    with pytest.raises(ConfigurationError) as exc:
        operator().get_settings(StepConfiguration(settings=both))
    assert "one key" in exc.value.accepted


def test_keys_of_other_components_and_general_settings_are_left_alone() -> None:
    keys = ["orchestrator.kubernetes", "resources", "docker", "experiment_tracker:mlflow"]
    assert misdirected_keys(keys, "step_operator", "kubernetes_job", "gpu-jobs") == []
    settings = {k: {} for k in keys}
    assert operator().get_settings(StepConfiguration(settings=settings)).gpu_type is None
