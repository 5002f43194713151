"""Sizes the API server or the node would refuse are ConfigurationErrors naming our field."""

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator.cli import main

S = KubernetesJobStepOperatorSettings
KIB = 1024


def info(run_name: str = "") -> StepRunInfo:
    return StepRunInfo(
        step_run_id="sr",
        run_id="r",
        run_name=run_name,
        pipeline_step_name="train",
        config=StepConfiguration(),
        images={"default": "img:1"},
    )


def refused(**kwargs: object) -> ConfigurationError:
    args: dict[str, object] = {"info": info(), "command": ["python"], "env": {}, "settings": S()}
    args.update(kwargs)
    with pytest.raises(ConfigurationError) as exc:
        build_job(
            args["info"],  # type: ignore[arg-type]
            args["command"],  # type: ignore[arg-type]
            args["env"],  # type: ignore[arg-type]
            args["settings"],  # type: ignore[arg-type]
            secret_environment=args.get("secret", {}),  # type: ignore[arg-type]
        )
    return exc.value


def test_an_environment_value_the_kernel_refuses() -> None:
    # The 2 MiB value reached the server and came back as a 422 about a label.
    error = refused(env={"BIG": "x" * (2 << 20)})
    assert error.field == "environment['BIG']"
    assert "less than 128 KiB" in error.accepted and "argument list too long" in error.accepted
    assert error.value == "2.1MiB"  # "BIG=" and 2 MiB, rounded up
    assert "xxx" not in str(error)  # never the value: it may be a secret
    assert refused(settings=S(env={"BIG": "x" * (128 * KIB)})).field == "settings.env['BIG']"
    error = refused(secret={"TOKEN": "x" * (128 * KIB)})
    assert error.field == "secret_environment['TOKEN']"
    # Just under the limit ("NAME=value" and its terminating NUL in 128 KiB) is fine.
    build_job(info(), ["python"], {"A": "x" * (128 * KIB - 3)}, S())


def test_a_command_argument_the_kernel_refuses() -> None:
    error = refused(command=["python", "-c", "x" * (200 * KIB)])
    assert error.field == "entrypoint_command[2]"
    assert error.value == "200KiB"


def test_a_job_the_api_server_cannot_store_names_what_fills_it() -> None:
    env = {f"V{i}": "x" * (100 * KIB) for i in range(16)}
    error = refused(env=env)
    assert error.field == "environment"
    assert "as JSON" in error.accepted and "1.5MiB" in error.accepted
    assert "of it from environment" in error.detail
    aliases = [{"ip": "10.0.0.1", "hostnames": [f"h{i}-" + "a" * 50]} for i in range(30000)]
    error = refused(settings=S(pod_spec_overrides={"hostAliases": aliases}))
    assert error.field == "settings.pod_spec_overrides"


def test_secret_values_beyond_what_a_secret_holds() -> None:
    secret = {f"S{i}": "x" * (120 * KIB) for i in range(10)}
    error = refused(secret=secret)
    assert error.field == "secret_environment"
    assert "at most 1 MiB" in error.accepted


def test_annotations_over_256_kib_name_the_field_that_fills_them() -> None:
    # The run's own name fills them: that is the field, not settings.annotations.
    error = refused(info=info(run_name="n" * (300 * KIB)))
    assert error.field == "info.run_name"
    big = {"example.com/a": "x" * (300 * KIB)}
    with pytest.raises(ConfigurationError) as exc:
        S(pod_annotations=big)
    assert exc.value.field == "settings.pod_annotations"
    half = {"example.com/a": "x" * (200 * KIB)}
    error = refused(info=info(run_name="n" * (100 * KIB)), settings=S(annotations=half))
    assert error.field == "settings.annotations"


def test_the_command_line_refuses_them_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--image", "a:1", "--env", "BIG=" + "x" * (200 * KIB), "--", "python"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "environment['BIG']: expected a variable (NAME=value) of less than 128 KiB" in err
