"""Every size is read the same way, in Kubernetes' spelling and ZenML's, and said the same way."""

from pathlib import Path

import pytest

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._step_operator_api.sizes import SIZE_FORMS, check_size, parse_size
from k8s_step_operator.cli import main


@pytest.mark.parametrize(
    ("text", "size", "quantity"),
    [
        ("16Gi", 16 << 30, "16Gi"),
        ("16GiB", 16 << 30, "16Gi"),
        ("16G", 16 * 10**9, "16G"),
        ("16GB", 16 * 10**9, "16G"),
        ("512KB", 512_000, "512k"),
        ("512K", 512_000, "512k"),
        ("512kB", 512_000, "512k"),
        ("512k", 512_000, "512k"),
        ("512Ki", 512 << 10, "512Ki"),
        ("1.5Gi", 3 << 29, "1.5Gi"),
        ("100B", 100, "100"),
        ("100", 100, "100"),
        ("2EiB", 2 << 60, "2Ei"),
    ],
)
def test_both_spellings_read_the_same(text: str, size: int, quantity: str) -> None:
    parsed = parse_size(text)
    assert (parsed.bytes, parsed.quantity, parsed.text) == (size, quantity, text)


@pytest.mark.parametrize(
    "text", ["", "GB", "1 GB", "1gb", "1gi", "1b", "-1Gi", "+1Gi", "1e9", "500m", "1.Gi", 5, None]
)
def test_what_is_not_a_size_is_refused_with_the_one_sentence(text: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_size("settings.shm_size", text)
    assert info.value.field == "settings.shm_size"
    assert info.value.accepted == SIZE_FORMS


def test_fractions_of_a_byte_and_the_bounds() -> None:
    with pytest.raises(ConfigurationError, match="whole number of bytes"):
        check_size("x", "1.5")
    with pytest.raises(ConfigurationError, match="above 0"):
        check_size("x", "0Gi")
    assert check_size("x", "0Gi", positive=False).bytes == 0
    with pytest.raises(ConfigurationError, match="below 8EiB"):
        check_size("x", "8EiB")


def _job(memory: str, shm: str) -> dict[str, object]:
    info = StepRunInfo(
        step_run_id="s",
        run_id="r",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(memory=memory)),
        images={"default": "img:1"},
    )
    settings = KubernetesJobStepOperatorSettings(shm_size=shm)
    return build_job(info, ["python"], {}, settings)


def test_memory_and_shm_size_take_both_spellings_and_the_job_keeps_the_number() -> None:
    # ZenML's spelling in shm_size, Kubernetes' in memory: both as the user wrote them.
    job: dict = _job("16Gi", "16GB")  # type: ignore[type-arg]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "16Gi"
    (shm,) = [v for v in pod["volumes"] if "emptyDir" in v]
    assert shm["emptyDir"]["sizeLimit"] == "16G"
    job = _job("16GiB", "16Gi")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "16Gi"


def test_the_same_sentence_for_settings_resources_and_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    errors: list[ConfigurationError] = []
    for build in (
        lambda: KubernetesJobStepOperatorSettings(shm_size="16gb"),
        lambda: ResourceSettings(memory="16gb"),
    ):
        with pytest.raises(ConfigurationError) as info:
            build()
        errors.append(info.value)
    assert [e.accepted for e in errors] == [SIZE_FORMS, SIZE_FORMS]
    settings = tmp_path / "s.yaml"
    settings.write_text("shm_size: 16GB\n", encoding="utf-8")
    argv = ["render", "--image", "a:1", "--settings", str(settings), "--memory", "16Gi"]
    assert main([*argv, "--", "python"]) == 0
    capsys.readouterr()
    assert main(["render", "--image", "a:1", "--memory", "16gb", "--", "python"]) == 2
    err = capsys.readouterr().err
    assert "--memory" in err and SIZE_FORMS in err
