"""What a step operator is told about the step it must run (ZenML's ``StepRunInfo``).

ZenML builds this object from its server; standalone users build it directly. The identifiers
may be UUIDs (as ZenML sends them) or any non-empty string; they are kept as strings.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import Field, field_validator

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._step_operator_api.base_settings import SettingsModel
from k8s_step_operator._step_operator_api.resource_settings import ResourceSettings

__all__ = ["PipelineConfiguration", "StepConfiguration", "StepRunInfo"]


class StepConfiguration(SettingsModel):
    """The part of a step's configuration a step operator reads."""

    error_prefix: ClassVar[str] = "info.config"

    name: str = Field(default="", description="The step's name in the pipeline.")
    resource_settings: ResourceSettings = Field(
        default_factory=ResourceSettings, description="CPU, memory and GPUs the step needs."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-component settings keyed '<component type>.<flavor>', e.g. "
        "'step_operator.kubernetes_job'; values are mappings or settings objects.",
    )


class PipelineConfiguration(SettingsModel):
    """The part of a pipeline's configuration a step operator reads."""

    error_prefix: ClassVar[str] = "info.pipeline"

    name: str = Field(default="", description="The pipeline's name.")


class StepRunInfo(SettingsModel):
    """Identifies one run of one step and carries its configuration.

    Attributes:
        step_run_id: The step run's id (unique per step and run).
        run_id: The pipeline run's id.
        run_name: The pipeline run's human-readable name.
        pipeline_step_name: The step's name in the pipeline.
        config: The step's configuration (resources, settings).
        pipeline: The pipeline's configuration (its name).
        images: Container images by component key, returned by ``get_image``.
    """

    error_prefix: ClassVar[str] = "info"

    step_run_id: str = Field(min_length=1, description="The step run's id.")
    run_id: str = Field(min_length=1, description="The pipeline run's id.")
    run_name: str = Field(default="", description="The pipeline run's name.")
    pipeline_step_name: str = Field(min_length=1, description="The step's name in the pipeline.")
    config: StepConfiguration = Field(
        default_factory=StepConfiguration, description="The step's configuration."
    )
    pipeline: PipelineConfiguration = Field(
        default_factory=PipelineConfiguration, description="The pipeline's configuration."
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Container images by component key; the key 'default' serves any component.",
    )

    @field_validator("step_run_id", "run_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, UUID) else value

    def get_image(self, key: str) -> str:
        """The image built for the component ``key`` (falls back to the ``default`` image).

        Raises:
            ConfigurationError: If no image is known for ``key``.
        """
        image = self.images.get(key) or self.images.get("default")
        if not image:
            raise ConfigurationError(
                f"info.images[{key!r}]",
                "an image for the step (set settings.image or StepRunInfo.images)",
                None,
            )
        return image
