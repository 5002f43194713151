import pytest
from pydantic import ValidationError

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
)
from k8s_step_operator._job.settings import parse_settings

KEY = "step_operator.kubernetes_job"


def info(settings: object = None, resources: ResourceSettings | None = None) -> StepRunInfo:
    return StepRunInfo(
        step_run_id="sr",
        run_id="r",
        pipeline_step_name="train",
        config=StepConfiguration(
            resource_settings=resources or ResourceSettings(),
            settings={} if settings is None else {KEY: settings},
        ),
        images={"default": "img:1"},
    )


def test_every_field_is_described_and_models_are_frozen_and_strict() -> None:
    for model in (KubernetesJobStepOperatorSettings, KubernetesJobStepOperatorConfig):
        for name, field in model.model_fields.items():
            assert field.description, name
        assert model.model_config.get("frozen") is True
        assert model.model_config.get("extra") == "forbid"


def test_runner_knob_defaults() -> None:
    s = KubernetesJobStepOperatorSettings()
    assert s.pending_timeout == 600
    assert s.image_pull_backoff_timeout == 300
    assert s.missing_config_grace == 30
    assert s.safety_poll_interval == 60
    assert s.stream_logs is True
    assert s.preflight_fit_check is True
    assert s.delete_on_cancel is True
    assert s.backoff_limit == 0
    assert s.ttl_seconds_after_finished == 600


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"pending_timeout": 0}, "settings.pending_timeout"),
        ({"safety_poll_interval": -1}, "settings.safety_poll_interval"),
        ({"gpu_count": 1.5}, "settings.gpu_count"),
        ({"gpu_count": -2}, "settings.gpu_count"),
        ({"gpu_count": True}, "settings.gpu_count"),
        ({"image_pull_policy": "Sometimes"}, "settings.image_pull_policy"),
        ({"gpu_cnt": 1}, "settings.gpu_cnt"),
        ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "settings.tolerations[0].operator"),
        ({"secret_env": {"A": {"name": "s"}}}, "settings.secret_env['A'].key"),
    ],
)
def test_validation_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        parse_settings(data)
    assert exc.value.field == field
    assert isinstance(exc.value.__cause__, ValidationError)


def test_config_inherits_settings_and_adds_connection_fields() -> None:
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path="/tmp/kc", kubernetes_context="ctx", incluster=False, gpu_count=1
    )
    assert isinstance(config, KubernetesJobStepOperatorSettings)
    assert config.kubeconfig_path == "/tmp/kc"
    assert "kubeconfig_path" not in KubernetesJobStepOperatorSettings.model_fields


def test_step_settings_override_component_config_field_by_field() -> None:
    op = KubernetesJobStepOperator(
        config=KubernetesJobStepOperatorConfig(
            namespace="ml", gpu_vendor="amd", shm_size="1Gi", kubernetes_context="c"
        )
    )
    merged = op.get_settings(info({"gpu_vendor": "nvidia", "gpu_count": 2}))
    assert type(merged) is KubernetesJobStepOperatorSettings
    assert merged.gpu_vendor == "nvidia"
    assert merged.gpu_count == 2
    assert merged.namespace == "ml"
    assert merged.shm_size == "1Gi"
    # A settings object counts only the fields it set.
    merged = op.get_settings(info(KubernetesJobStepOperatorSettings(gpu_count=3)))
    assert merged.gpu_vendor == "amd"
    assert merged.gpu_count == 3
    # No step settings: the config's values.
    assert op.get_settings(info()).namespace == "ml"


def test_steps_with_the_same_settings_share_one_validated_object() -> None:
    op = KubernetesJobStepOperator(config=KubernetesJobStepOperatorConfig(namespace="ml"))
    first = op.get_settings(info({"gpu_count": 2, "node_selector": {"pool": "a"}}))
    assert op.get_settings(info({"node_selector": {"pool": "a"}, "gpu_count": 2})) is first
    # Any difference, of value or of type, is validated on its own.
    other = op.get_settings(info({"gpu_count": 2, "node_selector": {"pool": "b"}}))
    assert other is not first and other.node_selector == {"pool": "b"}
    assert first.node_selector == {"pool": "a"}
    assert op.get_settings(info({"gpu_count": 2.0, "node_selector": {"pool": "a"}})) is not first
    # Another operator's config is its own.
    elsewhere = KubernetesJobStepOperator(config=KubernetesJobStepOperatorConfig(namespace="x"))
    assert (
        elsewhere.get_settings(info({"gpu_count": 2, "node_selector": {"pool": "a"}})).namespace
        == "x"
    )
    # Invalid input is refused every time, never kept.
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            op.get_settings(info({"gpu_count": -1}))
    # A bounded number of configurations is kept.
    for n in range(200):
        op.get_settings(info({"labels": {"n": str(n)}}))
    assert len(op.__dict__["_validated_settings"]) <= 65


def test_invalid_step_settings_name_the_key_and_field() -> None:
    op = KubernetesJobStepOperator()
    with pytest.raises(ConfigurationError) as exc:
        op.get_settings(info({"gpu_count": -1}))
    assert exc.value.field == f"settings[{KEY!r}].gpu_count"
    with pytest.raises(ConfigurationError) as exc:
        op.get_settings(info(42))
    assert exc.value.field == f"settings[{KEY!r}]"
    # A part of a field is named the same way through the component.
    with pytest.raises(ConfigurationError) as exc:
        op.get_settings(info({"labels": {"bad key!": "x"}}))
    assert exc.value.field == f"settings[{KEY!r}].labels['bad key!']"
    with pytest.raises(ConfigurationError) as exc:
        op.get_settings(info({"tolerations": [{"key": "k", "value": "bad value"}]}))
    assert exc.value.field == f"settings[{KEY!r}].tolerations[0].value"


def test_operator_build_job_uses_merged_settings() -> None:
    op = KubernetesJobStepOperator(config=KubernetesJobStepOperatorConfig(namespace="ml"))
    job = op.build_job(
        info({"gpu_type": "Tesla-T4"}, ResourceSettings(gpu_count=1)), ["python", "x.py"], {}
    )
    assert job["metadata"]["namespace"] == "ml"
    spec = job["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_step_run_info_accepts_uuids_and_requires_ids() -> None:
    import uuid

    run = uuid.uuid4()
    i = StepRunInfo(step_run_id=uuid.uuid4(), run_id=run, pipeline_step_name="s")  # type: ignore[arg-type]
    assert i.run_id == str(run)
    with pytest.raises(ValidationError):
        StepRunInfo(step_run_id="", run_id="r", pipeline_step_name="s")
    with pytest.raises(ConfigurationError):
        i.get_image("anything")
    assert info().get_image("anything") == "img:1"


# --- bad input is a ConfigurationError naming the field, from every way of building settings ---


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: KubernetesJobStepOperatorSettings(gpu_count="two"), "settings.gpu_count"),
        (lambda: KubernetesJobStepOperatorSettings(gpu_cnt=1), "settings.gpu_cnt"),
        (
            lambda: KubernetesJobStepOperatorSettings.model_validate({"gpu_count": -1}),
            "settings.gpu_count",
        ),
        (
            lambda: KubernetesJobStepOperatorSettings.model_validate_json('{"gpu_count": "x"}'),
            "settings.gpu_count",
        ),
        (lambda: KubernetesJobStepOperatorConfig(gpu_count="two"), "config.gpu_count"),
        (lambda: KubernetesJobStepOperatorConfig(incluster="maybe"), "config.incluster"),
        (lambda: ResourceSettings(gpu_count="two"), "resource_settings.gpu_count"),
        (lambda: parse_settings({"gpu_count": "two"}, "step.settings"), "step.settings.gpu_count"),
    ],
)
def test_construction_raises_configuration_error(build: object, field: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        build()  # type: ignore[operator]
    assert exc.value.field == field
    assert exc.value.accepted
    assert isinstance(exc.value.__cause__, ValidationError)


def test_secret_values_never_reach_the_error_nor_its_cause() -> None:
    import traceback

    value = "hf_" + "topsecret"  # built, so that the traceback's source lines do not show it
    with pytest.raises(ConfigurationError) as exc:
        KubernetesJobStepOperatorSettings(secret_env={"HF_TOKEN": value})
    printed = "".join(traceback.format_exception(exc.value))
    assert value not in printed
    assert "settings.secret_env" in printed
    assert value not in repr(exc.value)
    cause = exc.value.__cause__
    assert isinstance(cause, ValidationError)
    assert all(e["input"] is None for e in cause.errors())


@pytest.mark.parametrize(
    ("build", "field", "closest", "listed"),
    [
        (lambda: parse_settings({"shm_sise": "1Gi"}), "settings.shm_sise", "shm_size", "namespace"),
        (
            lambda: KubernetesJobStepOperatorConfig(kubeconfig="x"),
            "config.kubeconfig",
            "kubeconfig_path",
            "incluster",
        ),
        (
            lambda: parse_settings({"tolerations": [{"key": "a", "valu": "b"}]}),
            "settings.tolerations[0].valu",
            "value",
            "toleration_seconds",
        ),
        (
            lambda: parse_settings({"secret_env": {"A": {"name": "s", "kee": "k"}}}),
            "settings.secret_env['A'].kee",
            "key",
            "optional",
        ),
        (lambda: ResourceSettings(gpu_cont=1), "resource_settings.gpu_cont", "gpu_count", "memory"),
    ],
)
def test_an_unknown_key_names_the_closest_and_lists_the_others(
    build: object, field: str, closest: str, listed: str
) -> None:
    with pytest.raises(ConfigurationError) as exc:
        build()  # type: ignore[operator]
    assert exc.value.field == field
    assert f"did you mean {closest!r}?" in exc.value.accepted
    others = exc.value.accepted.split("The others: ")[1].split(", ")
    assert listed in others and closest not in others


def test_an_unknown_key_with_nothing_close_lists_every_key() -> None:
    with pytest.raises(ConfigurationError) as exc:
        parse_settings({"zzzzzz": 1})
    assert exc.value.accepted.startswith("one of the known settings: active_deadline_seconds,")
    assert "did you mean" not in exc.value.accepted
    step = StepConfiguration(settings={KEY: {"shm_sise": "1Gi"}})
    with pytest.raises(ConfigurationError) as exc:
        KubernetesJobStepOperator(config=KubernetesJobStepOperatorConfig()).get_settings(step)
    assert exc.value.field == f"settings[{KEY!r}].shm_sise"
    assert "did you mean 'shm_size'?" in exc.value.accepted


def test_a_missing_field_says_it_is_required() -> None:
    with pytest.raises(ConfigurationError) as exc:
        parse_settings({"secret_env": {"A": {"name": "s"}}})
    expected = "settings.secret_env['A'].key: expected a value (the field is required)"
    assert str(exc.value) == expected
