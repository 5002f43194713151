"""Hardware resources for a step, with ZenML's field names, memory syntax and units.

ZenML users write ``ResourceSettings(cpu_count=4, gpu_count=1, memory="16GB")``; the same object
is accepted here and translated to Kubernetes requests and limits by the Job builder. The memory
is read like every size of the package (``sizes``): ZenML's units (``16GiB``, ``512MB``, bytes
as ``B``) and Kubernetes' (``16Gi``, ``512M``) alike; a bad value is a ``ConfigurationError``
naming ``resource_settings.<field>``. The bounds a cluster imposes (how many GPUs, how much
memory) are the Job builder's to check: ZenML passes its own ``ResourceSettings``, which knows
none of them.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import ClassVar

from pydantic import Field, NonNegativeInt, PositiveFloat, field_validator

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._step_operator_api.base_settings import BaseSettings, whole_number
from k8s_step_operator._step_operator_api.sizes import SIZE_FORMS, check_size

__all__ = ["MEMORY_REGEX", "ByteUnit", "ResourceSettings"]


class ByteUnit(Enum):
    """Units accepted in ``ResourceSettings.memory`` (bytes, decimal and binary multiples)."""

    B = "B"
    KB = "KB"
    KIB = "KiB"
    MB = "MB"
    MIB = "MiB"
    GB = "GB"
    GIB = "GiB"
    TB = "TB"
    TIB = "TiB"
    PB = "PB"
    PIB = "PiB"

    @property
    def byte_value(self) -> int:
        """How many bytes one of this unit is."""
        return _BYTE_VALUES[self.value]

    @property
    def kubernetes_suffix(self) -> str:
        """The Kubernetes quantity suffix of this magnitude (``GB`` -> ``G``, ``KB`` -> ``k``).

        Bytes have none: a plain integer quantity is a number of bytes.
        """
        # Kubernetes writes decimal kilo in lower case; "1K" is not a quantity.
        return "k" if self is ByteUnit.KB else self.value[:-1]


_BYTE_VALUES: dict[str, int] = {
    "B": 1,
    "KB": 10**3,
    "KiB": 1 << 10,
    "MB": 10**6,
    "MiB": 1 << 20,
    "GB": 10**9,
    "GiB": 1 << 30,
    "TB": 10**12,
    "TiB": 1 << 40,
    "PB": 10**15,
    "PiB": 1 << 50,
}

# ZenML's own pattern for ``memory``; this model accepts Kubernetes' units too (``SIZE_FORMS``).
MEMORY_REGEX = r"^[0-9]+(" + "|".join(unit.value for unit in ByteUnit) + r")$"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


class ResourceSettings(BaseSettings):
    """CPU, memory and GPUs a step needs.

    Attributes:
        cpu_count: CPU cores (fractions allowed), requested from the scheduler.
        gpu_count: Whole GPUs; the Kubernetes settings may override it per step.
        memory: Memory with a unit, e.g. ``"16GB"`` or ``"512MiB"``; request and limit.
    """

    error_prefix: ClassVar[str] = "resource_settings"

    cpu_count: PositiveFloat | None = Field(
        default=None, description="CPU cores to request (a positive number, fractions allowed)."
    )
    gpu_count: NonNegativeInt | None = Field(
        default=None, description="Whole GPUs to request (a non-negative integer)."
    )
    memory: str | None = Field(
        default=None,
        description=f"Memory to request and limit to: {SIZE_FORMS}.",
    )

    @field_validator("gpu_count", mode="before")
    @classmethod
    def _whole_gpus(cls, value: object) -> object:
        if value is None:
            return None
        count = whole_number(value)
        if count is None or count < 0:
            raise ConfigurationError("", "a whole number of GPUs (0 or more)", value)
        return count

    @field_validator("cpu_count", mode="before")
    @classmethod
    def _cores(cls, value: object) -> object:
        if value is None:
            return None
        cores = _number(value)
        if cores is None or not math.isfinite(cores) or cores <= 0:
            raise ConfigurationError(
                "", "a positive number of CPU cores (fractions allowed, e.g. 0.5)", value
            )
        return cores

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> object:
        if value is not None:
            check_size("", value)
        return value

    @property
    def empty(self) -> bool:
        """True when no value was set."""
        return len(self.model_dump(exclude_unset=True, exclude_none=True)) == 0

    def get_memory(self, unit: str | ByteUnit = ByteUnit.GB) -> float | None:
        """The memory converted to ``unit``, or None when no memory is set.

        Args:
            unit: A ``ByteUnit`` or its value, e.g. ``"GiB"``.

        Raises:
            ValueError: If ``unit`` is not a known unit.
        """
        if not self.memory:
            return None
        target = ByteUnit(unit) if isinstance(unit, str) else unit
        return check_size("resource_settings.memory", self.memory).bytes / target.byte_value
