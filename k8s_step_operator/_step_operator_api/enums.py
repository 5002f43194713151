"""Enumerations shared with the ZenML API, so flavors written for ZenML read the same here."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ExecutionStatus", "StackComponentType"]


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


class ExecutionStatus(StrEnum):
    """A step run's status; values match ZenML's ``zenml.enums.ExecutionStatus``."""

    INITIALIZING = "initializing"
    PROVISIONING = "provisioning"
    QUEUED = "queued"
    RUNNING = "running"
    FAILED = "failed"
    COMPLETED = "completed"
    CACHED = "cached"
    SKIPPED = "skipped"
    RETRYING = "retrying"
    RETRIED = "retried"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    RESUMING = "resuming"
    STOPPED = "stopped"
    STOPPING = "stopping"

    @property
    def is_finished(self) -> bool:
        """Whether the status is final."""
        return self in {
            ExecutionStatus.FAILED,
            ExecutionStatus.COMPLETED,
            ExecutionStatus.CACHED,
            ExecutionStatus.SKIPPED,
            ExecutionStatus.RETRIED,
            ExecutionStatus.STOPPED,
            ExecutionStatus.CANCELLED,
        }

    @property
    def is_successful(self) -> bool:
        """Whether the step ended well (ran, or had nothing to do)."""
        return self in {ExecutionStatus.COMPLETED, ExecutionStatus.CACHED, ExecutionStatus.SKIPPED}

    @property
    def is_failed(self) -> bool:
        """Whether the step ended badly."""
        return self in {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
