import pytest
from pydantic import ValidationError

from k8s_step_operator import ByteUnit, ResourceSettings
from k8s_step_operator._api.resource_settings import MEMORY_REGEX


@pytest.mark.parametrize(
    ("memory", "unit", "expected"),
    [
        ("1GB", "MB", 1000.0),
        ("1GiB", "MiB", 1024.0),
        ("2KiB", "KB", 2.048),
        ("512MiB", ByteUnit.GIB, 0.5),
        ("3PB", "TB", 3000.0),
        ("1TiB", "GiB", 1024.0),
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
    assert MEMORY_REGEX == r"^[0-9]+(KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$"


@pytest.mark.parametrize("memory", ["1", "1G", "1Gi", "1.5GB", "-1GB", "GB", "1 GB", "1gb"])
def test_bad_memory_is_refused(memory: str) -> None:
    with pytest.raises(ValidationError) as info:
        ResourceSettings(memory=memory)
    assert info.value.errors()[0]["loc"] == ("memory",)


@pytest.mark.parametrize("cpu", [0, -1, -0.5])
def test_cpu_must_be_positive(cpu: float) -> None:
    with pytest.raises(ValidationError):
        ResourceSettings(cpu_count=cpu)


@pytest.mark.parametrize("gpus", [-1, 1.5, True, "two"])
def test_gpu_count_must_be_a_non_negative_integer(gpus: object) -> None:
    with pytest.raises(ValidationError) as info:
        ResourceSettings(gpu_count=gpus)
    assert info.value.errors()[0]["loc"] == ("gpu_count",)


def test_frozen_and_strict() -> None:
    rs = ResourceSettings(cpu_count=2, gpu_count=1, memory="1GB")
    with pytest.raises(ValidationError):
        rs.cpu_count = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ResourceSettings(gpus=1)  # type: ignore[call-arg]
