"""The Kubernetes Job step operator: one step, one batch/v1 Job, on GPU nodes when asked.

This module merges the step's settings over the component config and builds the Job; submitting,
watching and cancelling belong to the step runner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from k8s_step_operator.base_step_operator import BaseStepOperator
from k8s_step_operator.job_builder import build_job
from k8s_step_operator.settings import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
)
from k8s_step_operator.step_run_info import StepConfiguration, StepRunInfo

__all__ = ["FLAVOR_NAME", "KubernetesJobStepOperator"]

FLAVOR_NAME = "kubernetes_job"


class KubernetesJobStepOperator(BaseStepOperator):
    """Runs each step as a Kubernetes Job.

    Settings for one step go under ``"step_operator.kubernetes_job"`` in the step's settings and
    override the component config field by field.
    """

    def __init__(
        self,
        name: str = FLAVOR_NAME,
        config: KubernetesJobStepOperatorConfig | None = None,
        *,
        flavor: str = FLAVOR_NAME,
        id: UUID | None = None,
    ) -> None:
        """Create the step operator; ``config`` defaults to the defaults of every field."""
        super().__init__(name, config or KubernetesJobStepOperatorConfig(), flavor=flavor, id=id)

    @property
    def config(self) -> KubernetesJobStepOperatorConfig:
        """The step operator's configuration (cluster-wide defaults)."""
        return cast(KubernetesJobStepOperatorConfig, self._config)

    @property
    def settings_class(self) -> type[KubernetesJobStepOperatorSettings]:
        """Steps override ``KubernetesJobStepOperatorSettings`` fields."""
        return KubernetesJobStepOperatorSettings

    def get_settings(
        self, container: StepRunInfo | StepConfiguration
    ) -> KubernetesJobStepOperatorSettings:
        """The step's settings merged over the component config.

        Raises:
            ConfigurationError: If the merged settings are invalid.
        """
        return cast(KubernetesJobStepOperatorSettings, super().get_settings(container))

    def build_job(
        self,
        info: StepRunInfo,
        entrypoint_command: Sequence[str],
        environment: Mapping[str, str],
    ) -> dict[str, Any]:
        """The Job that ``launch`` would submit for this step, as a JSON-ready dict.

        Raises:
            ConfigurationError: If the settings or inputs are invalid; nothing is sent.
        """
        return build_job(info, entrypoint_command, environment, self.get_settings(info))

    def launch(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Run the step as a Job and wait for it.

        Raises:
            NotImplementedError: Always, until the step runner provides it.
        """
        # PLACEHOLDER: replaced by the step runner's submit/watch implementation.
        raise NotImplementedError("KubernetesJobStepOperator.launch is provided by the step runner")
