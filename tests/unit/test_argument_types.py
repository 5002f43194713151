"""An argument of the wrong type is refused at once, by name, instead of being taken for another."""

import uuid
from datetime import datetime

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)

CONFIG = KubernetesJobStepOperatorConfig(namespace="ml", gpu_type="NVIDIA-H100-80GB-HBM3")


def test_a_config_passed_where_the_id_goes_is_refused() -> None:
    # ZenML's order is (name, id, config, ...): the config second became the id, and the
    # operator ran with an empty default config.
    with pytest.raises(ConfigurationError) as exc:
        KubernetesJobStepOperator("gpu", CONFIG)  # type: ignore[arg-type]
    assert exc.value.field == "KubernetesJobStepOperator(id=...)"
    assert "pass the config by name: KubernetesJobStepOperator('gpu', config=...)" in str(exc.value)
    assert exc.value.value == "KubernetesJobStepOperatorConfig"


@pytest.mark.parametrize(
    ("kwargs", "field", "accepted"),
    [
        ({"name": CONFIG}, "name", "a non-empty string; pass the config by name"),
        ({"name": ""}, "name", "a non-empty string"),
        ({"id": "not-a-uuid"}, "id", "a UUID or None"),
        ({"id": 42}, "id", "a UUID or None"),
        ({"config": {"namespace": "ml"}}, "config", "(**mapping)"),
        ({"config": "ml"}, "config", "a KubernetesJobStepOperatorConfig"),
        ({"config": {}}, "config", "KubernetesJobStepOperatorConfig(**mapping)"),
        ({"flavor": 1}, "flavor", "a string"),
        ({"type": "step_operator"}, "type", "a StackComponentType"),
        ({"user": "me"}, "user", "a UUID or None"),
        ({"created": "yesterday"}, "created", "a datetime or None"),
        ({"labels": ["a"]}, "labels", "a mapping or None"),
        ({"connector_resource_id": 3}, "connector_resource_id", "a string or None"),
    ],
)
def test_every_constructor_argument_is_checked(
    kwargs: dict[str, object], field: str, accepted: str
) -> None:
    args: dict[str, object] = {"name": "gpu", "config": CONFIG, **kwargs}
    with pytest.raises(ConfigurationError) as exc:
        KubernetesJobStepOperator(**args)  # type: ignore[arg-type]
    assert exc.value.field == f"KubernetesJobStepOperator({field}=...)"
    assert accepted in exc.value.accepted


def test_the_right_types_still_work() -> None:
    ident = uuid.uuid4()
    op = KubernetesJobStepOperator("gpu", ident, CONFIG, created=datetime(2026, 1, 1))
    assert (op.id, op.config) == (ident, CONFIG)
    assert KubernetesJobStepOperator("gpu", str(ident), config=CONFIG).id == ident
    assert KubernetesJobStepOperator("gpu", config=CONFIG).config.namespace == "ml"


def info() -> StepRunInfo:
    return StepRunInfo(
        step_run_id="s", run_id="r", pipeline_step_name="t", images={"default": "img:1"}
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (({"run_id": "r"}, ["a"], {}, KubernetesJobStepOperatorSettings()), "info"),
        ((info(), {"A": "1"}, ["a"], KubernetesJobStepOperatorSettings()), "entrypoint_command"),
        ((info(), ["a"], ["A=1"], KubernetesJobStepOperatorSettings()), "environment"),
        ((info(), ["a"], {}, {"namespace": "ml"}), "settings"),
    ],
)
def test_build_and_launch_arguments_of_the_wrong_kind(args: tuple[object, ...], field: str) -> None:
    # Swapped or raw arguments used to fail with an AttributeError deep inside, or (a mapping
    # for the command) to run its keys.
    with pytest.raises(ConfigurationError) as exc:
        build_job(*args)  # type: ignore[arg-type]
    assert exc.value.field == field
    op = KubernetesJobStepOperator("gpu", config=CONFIG)
    if field != "settings":
        with pytest.raises(ConfigurationError) as exc:
            op.submit(*args[:3])  # type: ignore[arg-type]
        assert exc.value.field == field


def test_the_step_run_info_names_its_fields_too() -> None:
    with pytest.raises(ConfigurationError) as exc:
        StepRunInfo(step_run_id="", run_id="r", pipeline_step_name="t")
    assert str(exc.value) == (
        "info.step_run_id: expected a string with at least 1 character (got '')"
    )
    with pytest.raises(ConfigurationError) as exc:
        StepConfiguration(setings={})  # type: ignore[call-arg]
    assert exc.value.field == "info.config.setings"
    assert "did you mean 'settings'?" in exc.value.accepted
