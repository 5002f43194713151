"""Image references the kubelet cannot read are refused before anything is sent."""

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job.kube_syntax import IMAGE_RULE, image_ref_problem
from k8s_step_operator._job.spec import IMAGE_KEY
from k8s_step_operator.cli import main

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "img:1",
        "busybox:1.36",
        "localhost/k8s-step-operator-python:dev",
        "localhost:5000/team/train:1.4",
        "registry.example.com/team/train_v2:1.4-rc.1",
        "Registry.Example.com/team/train:1",  # a registry host may have upper case
        "[::1]:5000/x:y",
        f"python:3.11@{SHA}",
        f"python@{SHA}",
        "a__b/c-d/e.f:Tag_1",
    ],
)
def test_references_the_kubelet_reads(image: str) -> None:
    assert image_ref_problem(image) == ""
    assert KubernetesJobStepOperatorSettings(image=image).image == image


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("localhost//x::1", "not of the form"),
        ("registry.example.com/Team/train:1", "'Team/train' has upper-case letters"),
        ("Train:1", "'Train' has upper-case letters"),
        ("x:", "not of the form"),
        ("x___y:1", "not of the form"),
        ("x:" + "t" * 129, "not of the form"),
        ("python@sha256:abc", "not of the form"),
        ("python@md5:" + "0" * 32, "'md5'"),
        ("python@sha256:" + "A" * 64, "64 lowercase hexadecimal"),
        ("0123456789abcdef" * 4, "64-character hexadecimal id"),
        ("example.com/" + "a" * 250, "at most 255"),
        ("has space:1", "whitespace"),
        ("", "empty"),
    ],
)
def test_references_the_kubelet_refuses_are_configuration_errors(image: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        KubernetesJobStepOperatorSettings(image=image)
    assert info.value.field == "settings.image"
    assert info.value.accepted == IMAGE_RULE
    assert problem in info.value.detail


def test_the_step_s_own_image_and_an_init_container_s_too() -> None:
    info = StepRunInfo(
        step_run_id="s",
        run_id="r",
        pipeline_step_name="train",
        config=StepConfiguration(),
        images={IMAGE_KEY: "Team/Train:1"},
    )
    with pytest.raises(ConfigurationError) as exc:
        build_job(info, ["a"], {}, KubernetesJobStepOperatorSettings())
    assert exc.value.field == f"info.images[{IMAGE_KEY!r}]"
    with pytest.raises(ConfigurationError) as exc:
        KubernetesJobStepOperatorSettings(
            pod_spec_overrides={"initContainers": [{"name": "init", "image": "localhost//x::1"}]}
        )
    assert exc.value.field == "settings.pod_spec_overrides['initContainers'][0].image"


@pytest.mark.parametrize("command", ["run", "render"])
def test_the_command_line_refuses_them_with_exit_2(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Nothing is sent: no kubeconfig is even read (there is none here for run to use).
    assert main([command, "--image", "localhost//x::1", "--", "echo", "hi"]) == 2
    err = capsys.readouterr().err
    assert "settings.image: expected an image reference" in err
    assert len(err.strip().splitlines()) == 1
