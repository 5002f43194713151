"""The Kubernetes Job step operator: one step, one batch/v1 Job, on GPU nodes when asked.

This module merges the step's settings over the component config, builds the Job, and hands it to
the step runner (``_runner.py``), which submits, follows and cancels it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from kubernetes import client as k8s

from k8s_step_operator._api.base_step_operator import BaseStepOperator, BaseStepOperatorFlavor
from k8s_step_operator._api.enums import ExecutionStatus
from k8s_step_operator._api.step_run_info import StepConfiguration, StepRunInfo
from k8s_step_operator._errors import NotFoundError
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.naming import job_name
from k8s_step_operator._job.settings import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
)
from k8s_step_operator._kube.client import load_api_client
from k8s_step_operator._runner.diagnosis import Limits, Phase
from k8s_step_operator._runner.step_run import RunOptions, StepRun, job_status

__all__ = ["FLAVOR_NAME", "KubernetesJobStepOperator", "KubernetesJobStepOperatorFlavor"]

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
        self._client: k8s.ApiClient | None = None
        self._client_lock = threading.Lock()

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
        """Run the step as a Job and wait until it ends.

        A Job left by an earlier call for the same run and step is adopted, not duplicated. On
        Ctrl-C or SIGTERM the Job is deleted and its pods are waited for before re-raising.

        Raises:
            ConfigurationError: If the settings or inputs are invalid; nothing is sent.
            StepError: If the step did not succeed (the subclass says why).
            ApiError: If the API server refused a request.
        """
        self._step_run(info, entrypoint_command, environment).run()

    # -- the non-blocking form ------------------------------------------------------------

    def submit(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Submit the step's Job and return at once; follow it with ``get_status`` or ``wait``."""
        self._step_run(info, entrypoint_command, environment).submit()

    def get_status(self, info: StepRunInfo) -> ExecutionStatus:
        """The step's status, read from its Job and pods."""
        obs = job_status(self._api_client(), self._namespace(info), self._job_name(info))
        if obs is None:
            return ExecutionStatus.STOPPED
        return _STATUS[obs.phase]

    def wait(self, info: StepRunInfo) -> None:
        """Wait for a submitted step to end, as ``launch`` does.

        Raises:
            StepError: If the step did not succeed.
        """
        run = self._step_run(info, [], {}, build=False)
        run.uid = str(run.get()["metadata"]["uid"])
        run.wait()

    def cancel(self, info: StepRunInfo) -> None:
        """Delete the step's Job and wait until none of its pods is left."""
        run = self._step_run(info, [], {}, build=False)
        with contextlib.suppress(NotFoundError):
            run.uid = str(run.get()["metadata"]["uid"])
        run.cancel()

    # -- plumbing -------------------------------------------------------------------------

    def _api_client(self) -> k8s.ApiClient:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = load_api_client(
                        self.config.kubeconfig_path,
                        self.config.kubernetes_context,
                        self.config.incluster,
                    )
        return self._client

    def _namespace(self, info: StepRunInfo) -> str:
        return self.get_settings(info).namespace or "default"

    def _job_name(self, info: StepRunInfo) -> str:
        return job_name(info.run_id, info.pipeline_step_name)

    def _step_run(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
        *,
        build: bool = True,
    ) -> StepRun:
        settings = self.get_settings(info)
        if build:
            job = self.build_job(info, entrypoint_command, environment)
        else:
            job = {"metadata": {"name": self._job_name(info), "namespace": self._namespace(info)}}
        options = RunOptions(
            limits=Limits(
                pending_timeout=settings.pending_timeout,
                image_pull_backoff_timeout=settings.image_pull_backoff_timeout,
                missing_config_grace=settings.missing_config_grace,
                queued_timeout=settings.queue_timeout,
            ),
            safety_poll_interval=settings.safety_poll_interval,
            stream_logs=settings.stream_logs,
            preflight_fit_check=settings.preflight_fit_check,
            delete_on_cancel=settings.delete_on_cancel,
        )
        return StepRun(
            self._api_client(),
            job,
            run_id=info.run_id,
            step_name=info.pipeline_step_name,
            options=options,
        )


_STATUS = {
    Phase.SUBMITTED: ExecutionStatus.INITIALIZING,
    Phase.QUEUED: ExecutionStatus.INITIALIZING,
    Phase.SCHEDULING: ExecutionStatus.PROVISIONING,
    Phase.STARTING: ExecutionStatus.PROVISIONING,
    Phase.RUNNING: ExecutionStatus.RUNNING,
    Phase.SUCCEEDED: ExecutionStatus.COMPLETED,
    Phase.FAILED: ExecutionStatus.FAILED,
}


class KubernetesJobStepOperatorFlavor(BaseStepOperatorFlavor):
    """Run each step as a Kubernetes Job (registered as ``k8s_step_operator.flavors``)."""

    @property
    def name(self) -> str:
        """``kubernetes_job``."""
        return FLAVOR_NAME

    @property
    def config_class(self) -> type[KubernetesJobStepOperatorConfig]:
        """``KubernetesJobStepOperatorConfig``."""
        return KubernetesJobStepOperatorConfig

    @property
    def implementation_class(self) -> type[KubernetesJobStepOperator]:
        """``KubernetesJobStepOperator``."""
        return KubernetesJobStepOperator
