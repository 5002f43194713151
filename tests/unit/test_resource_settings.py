import pytest
from pydantic import ValidationError

from k8s_step_operator import ByteUnit, ConfigurationError, ResourceSettings, StepConfiguration
from k8s_step_operator._step_operator_api.resource_settings import MEMORY_REGEX


@pytest.mark.parametrize(
    ("memory", "unit", "expected"),
    [
        ("1GB", "MB", 1000.0),
        ("1GiB", "MiB", 1024.0),
        ("2KiB", "KB", 2.048),
        ("512MiB", ByteUnit.GIB, 0.5),
        ("3PB", "TB", 3000.0),
        ("1TiB", "GiB", 1024.0),
        ("2048B", "KiB", 2.0),
        ("1KB", "B", 1000.0),
        ("1Gi", "MiB", 1024.0),
        ("1G", "MB", 1000.0),
        ("1.5Gi", "MiB", 1536.0),
    ],
)
def test_get_memory_converts(memory: str, unit: str | ByteUnit, expected: float) -> None:
    assert ResourceSettings(memory=memory).get_memory(unit) == pytest.approx(expected)


def test_get_memory_defaults_to_gb_and_none() -> None:
    assert ResourceSettings(memory="5GB").get_memory() == 5.0
    assert ResourceSettings().get_memory() is None
    assert ResourceSettings().empty
    assert not ResourceSettings(cpu_count=1).empty


def test_memory_regex_is_zenmls() -> None:
    # ZenML 0.98 accepts bytes ("100B") too.
    assert MEMORY_REGEX == r"^[0-9]+(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$"


def test_byte_units() -> None:
    assert ByteUnit.B.kubernetes_suffix == ""
    assert ByteUnit.KB.kubernetes_suffix == "k"
    assert ByteUnit.B.byte_value == 1


def refused(field: str, **kw: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        ResourceSettings(**kw)  # type: ignore[arg-type]
    assert info.value.field == field, info.value
    assert info.value.accepted
    assert isinstance(info.value.__cause__, ValidationError)
    return info.value


@pytest.mark.parametrize("memory", ["16GiB", "16Gi", "16GB", "16G", "1.5GB", "100B", "512Mi"])
def test_memory_in_either_spelling(memory: str) -> None:
    # ZenML's units and Kubernetes' alike: the user who copies one into the other is right.
    assert ResourceSettings(memory=memory).memory == memory


@pytest.mark.parametrize(
    "memory", ["-1GB", "GB", "1 GB", "1gb", "1b", "1.5", "0GB", "8EiB", "16Gib", 16, [1]]
)
def test_bad_memory_is_refused(memory: object) -> None:
    error = refused("resource_settings.memory", memory=memory)
    assert "GiB" in error.accepted and "Gi," in error.accepted


@pytest.mark.parametrize("cpu", [0, -1, -0.5, float("nan"), float("inf"), "x", True, [1]])
def test_cpu_must_be_positive(cpu: object) -> None:
    refused("resource_settings.cpu_count", cpu_count=cpu)


@pytest.mark.parametrize("gpus", [-1, 1.5, True, "two", [1], "1.0"])
def test_gpu_count_must_be_a_non_negative_integer(gpus: object) -> None:
    error = refused("resource_settings.gpu_count", gpu_count=gpus)
    assert error.accepted == "a whole number of GPUs (0 or more)"
    assert "expected a whole number of GPUs" in str(error)


@pytest.mark.parametrize(("gpus", "expected"), [(2, 2), ("3", 3), (4.0, 4), (0, 0)])
def test_gpu_count_accepts_whole_numbers(gpus: object, expected: int) -> None:
    assert ResourceSettings(gpu_count=gpus).gpu_count == expected  # type: ignore[arg-type]


def test_the_error_is_also_pydantics_validation_error() -> None:
    # Code written against a plain pydantic model keeps catching what it caught.
    with pytest.raises(ValidationError) as info:
        ResourceSettings(gpu_count="two")  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, ValueError)
    assert info.value.errors()[0]["loc"] == ("gpu_count",)
    assert str(info.value).startswith("resource_settings.gpu_count: expected")


def test_model_validate_raises_configuration_error_too() -> None:
    with pytest.raises(ConfigurationError) as info:
        ResourceSettings.model_validate({"gpu_count": "two"})
    assert info.value.field == "resource_settings.gpu_count"
    with pytest.raises(ConfigurationError) as info:
        ResourceSettings.model_validate_json('{"memory": "lots"}')
    assert info.value.field == "resource_settings.memory"


def test_nested_models_still_validate() -> None:
    assert StepConfiguration(resource_settings={"gpu_count": 2}).resource_settings.gpu_count == 2  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as info:
        StepConfiguration(resource_settings={"gpu_count": "two"})  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"] == ("resource_settings", "gpu_count")
    rs = ResourceSettings(gpu_count=1)
    assert StepConfiguration(resource_settings=rs).resource_settings is rs


def test_frozen_and_strict() -> None:
    rs = ResourceSettings(cpu_count=2, gpu_count=1, memory="1GB")
    with pytest.raises(ValidationError):
        rs.cpu_count = 3  # type: ignore[misc]
    refused("resource_settings.gpus", gpus=1)
