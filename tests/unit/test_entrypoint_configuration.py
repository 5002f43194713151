import pytest

from k8s_step_operator import (
    BaseEntrypointConfiguration,
    ConfigurationError,
    StepEntrypointConfiguration,
    StepOperatorEntrypointConfiguration,
)

SOURCE = (
    "k8s_step_operator._step_operator_api.entrypoint_configuration."
    "StepOperatorEntrypointConfiguration"
)


def test_command_runs_the_entrypoint_module() -> None:
    assert StepOperatorEntrypointConfiguration.get_entrypoint_command() == [
        "python",
        "-m",
        "k8s_step_operator.entrypoint",
    ]


def test_options_build_on_the_parents() -> None:
    base = BaseEntrypointConfiguration.get_entrypoint_options()
    step = StepEntrypointConfiguration.get_entrypoint_options()
    op = StepOperatorEntrypointConfiguration.get_entrypoint_options()
    assert base == {"entrypoint_config_source"}
    assert step == base | {"step_name", "step_source"}
    assert op == step | {"step_run_id"}


def test_arguments_append_the_step_run_id() -> None:
    args = StepOperatorEntrypointConfiguration.get_entrypoint_arguments(
        step_name="train", step_source="pkg.mod:train", step_run_id="abc-123"
    )
    assert args == [
        "--entrypoint_config_source",
        SOURCE,
        "--step_name",
        "train",
        "--step_source",
        "pkg.mod:train",
        "--step_run_id",
        "abc-123",
    ]
    assert args[-2:] == ["--step_run_id", "abc-123"]


def test_arguments_parse_back() -> None:
    args = StepOperatorEntrypointConfiguration.get_entrypoint_arguments(
        step_name="train", step_source="pkg.mod:train", step_run_id="abc-123"
    )
    config = StepOperatorEntrypointConfiguration(arguments=args)
    assert config.entrypoint_args == {
        "step_name": "train",
        "step_source": "pkg.mod:train",
        "step_run_id": "abc-123",
    }


@pytest.mark.parametrize("missing", ["step_name", "step_source", "step_run_id"])
def test_missing_argument_names_the_option(missing: str) -> None:
    kwargs = {"step_name": "t", "step_source": "m:f", "step_run_id": "1"}
    del kwargs[missing]
    with pytest.raises(ConfigurationError) as info:
        StepOperatorEntrypointConfiguration.get_entrypoint_arguments(**kwargs)
    assert missing in info.value.field


def test_parsing_without_a_required_option_fails_clearly() -> None:
    with pytest.raises(ConfigurationError) as info:
        StepOperatorEntrypointConfiguration(arguments=["--step_name", "x"])
    assert "step_run_id" in str(info.value) or "step_source" in str(info.value)


def test_run_calls_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    import types

    module = types.ModuleType("fake_steps_for_test")
    module.train = lambda: calls.append("ran")  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "fake_steps_for_test", module)
    config = StepOperatorEntrypointConfiguration(
        StepOperatorEntrypointConfiguration.get_entrypoint_arguments(
            step_name="t", step_source="fake_steps_for_test:train", step_run_id="1"
        )
    )
    config.run()
    assert calls == ["ran"]


def test_non_callable_step_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    module = types.ModuleType("fake_steps_for_test2")
    module.value = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "fake_steps_for_test2", module)
    config = StepEntrypointConfiguration(
        ["--step_name", "t", "--step_source", "fake_steps_for_test2.value"]
    )
    with pytest.raises(ConfigurationError) as info:
        config.run()
    assert info.value.field == "--step_source"
