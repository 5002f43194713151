"""Enumerations shared with the ZenML API, so flavors written for ZenML read the same here."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["StackComponentType"]


class StackComponentType(StrEnum):
    """The kinds of stack components; values match ZenML's ``zenml.enums.StackComponentType``."""

    ALERTER = "alerter"
    ANNOTATOR = "annotator"
    ARTIFACT_STORE = "artifact_store"
    CONTAINER_REGISTRY = "container_registry"
    DATA_VALIDATOR = "data_validator"
    EXPERIMENT_TRACKER = "experiment_tracker"
    FEATURE_STORE = "feature_store"
    IMAGE_BUILDER = "image_builder"
    MODEL_DEPLOYER = "model_deployer"
    ORCHESTRATOR = "orchestrator"
    STEP_OPERATOR = "step_operator"
    MODEL_REGISTRY = "model_registry"
    DEPLOYER = "deployer"

    @property
    def plural(self) -> str:
        """The plural form of the component type, e.g. ``step_operators``."""
        return f"{self.value}s"
