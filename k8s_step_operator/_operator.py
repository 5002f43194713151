"""The Kubernetes Job step operator: one step run, one batch/v1 Job, on GPU nodes when asked.

This is where the layers meet: the step's settings are merged once over the component config,
the Job is built by the pure builder, and the runner follows it through the API access of the
Kubernetes layer. The operator owns that access (one API client, its watcher registry, its node,
autoscaler and queue views) and its event bus, and releases them on ``close`` (it is a context
manager). Nothing of it is global: two operators share nothing.

``attach`` is the one way to follow a step that is already running (from another process, after
a restart): ``follow``, ``cancel``, ``wait`` and ZenML's integration all go through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, cast
from uuid import UUID

from k8s_step_operator._errors import NameCollisionError, NotFoundError
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.env_secret import build_env_secret
from k8s_step_operator._job.gpu import GPU_LABEL_SCHEMES, GPULabelScheme
from k8s_step_operator._job.naming import job_name
from k8s_step_operator._job.settings import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
)
from k8s_step_operator._kube.access import KubeApi
from k8s_step_operator._kube.client import load_client
from k8s_step_operator._objects import Job
from k8s_step_operator._runner.autoscaler import AutoscalerView
from k8s_step_operator._runner.diagnosis import Phase
from k8s_step_operator._runner.event_log import log_event
from k8s_step_operator._runner.events import EventBus, Retrying, Subscriber
from k8s_step_operator._runner.kueue import QueueView
from k8s_step_operator._runner.ports import KubeAccess
from k8s_step_operator._runner.step_run import NodeView, StepIdentity, StepRun, job_status
from k8s_step_operator._runner.watcher import WatcherRegistry
from k8s_step_operator._step_operator_api.base_step_operator import (
    BaseStepOperator,
    BaseStepOperatorFlavor,
)
from k8s_step_operator._step_operator_api.enums import ExecutionStatus, StackComponentType
from k8s_step_operator._step_operator_api.stack_component import StackComponentConfig
from k8s_step_operator._step_operator_api.step_run_info import StepConfiguration, StepRunInfo

__all__ = ["FLAVOR_NAME", "KubernetesJobStepOperator", "KubernetesJobStepOperatorFlavor"]

FLAVOR_NAME = "kubernetes_job"


class KubernetesJobStepOperator(BaseStepOperator):
    """Runs each step as a Kubernetes Job.

    Settings for one step go under ``"step_operator.kubernetes_job"`` in the step's settings and
    override the component config field by field. Use it as a context manager, or call
    ``close`` when done, to stop its watches and close its API client.

    Attributes:
        gpu_label_schemes: The GPU label schemes ``gpu_label_scheme`` may name, by name: the
            built-in ones (``GPU_LABEL_SCHEMES``). A subclass, or an instance, with schemes of its
            own sets a table that holds them, such as ``{**GPU_LABEL_SCHEMES, scheme.name:
            scheme}``.
    """

    gpu_label_schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES
    config_class: ClassVar[type[StackComponentConfig]] = KubernetesJobStepOperatorConfig

    def __init__(
        self,
        name: str = FLAVOR_NAME,
        id: UUID | None = None,
        config: KubernetesJobStepOperatorConfig | None = None,
        flavor: str = FLAVOR_NAME,
        type: StackComponentType = StackComponentType.STEP_OPERATOR,
        user: UUID | None = None,
        workspace: UUID | None = None,
        created: datetime | None = None,
        updated: datetime | None = None,
        labels: dict[str, Any] | None = None,
        connector_requirements: Any = None,
        connector: UUID | None = None,
        connector_resource_id: str | None = None,
    ) -> None:
        """Create the step operator; ``config`` defaults to the defaults of every field."""
        super().__init__(
            name,
            id,
            KubernetesJobStepOperatorConfig() if config is None else config,
            flavor,
            type,
            user,
            workspace,
            created,
            updated,
            labels,
            connector_requirements,
            connector,
            connector_resource_id,
        )
        self._access: KubeApi | None = None
        self._context_namespace = "default"
        self._nodes: NodeView | None = None
        self._autoscalers: AutoscalerView | None = None
        self._queues: QueueView | None = None
        self._lock = threading.Lock()
        self._events = EventBus()
        self._events.subscribe(log_event)
        self._watchers = WatcherRegistry(on_retry=self._retrying)

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

    # -- lifecycle ------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Receive the events of every step this operator runs, follows or cancels.

        The subscriber is called with each event (``Submitted``, ``PhaseChanged``,
        ``Heartbeat``, ``Admitted``, ``Preempted``, ``LogLine``, ``Finished``) on the step's
        thread, in order: keep it quick and thread-safe. Logging is a subscriber already.

        Returns:
            A call that unsubscribes it.
        """
        return self._events.subscribe(subscriber)

    def close(self) -> None:
        """Stop this operator's watches and close its API client; it reconnects on next use."""
        with self._lock:
            access, self._access = self._access, None
            self._nodes = self._autoscalers = self._queues = None
        if access is not None:
            self._watchers.close(access)
            access.close()

    def __enter__(self) -> KubernetesJobStepOperator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the synchronous form -------------------------------------------------------------

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
        return self._build(info, entrypoint_command, environment, self.get_settings(info))

    def launch(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Run the step as a Job and wait until it ends.

        A Job left by an earlier call for the same step run is adopted, not duplicated. On
        Ctrl-C, SIGTERM or SIGHUP the Job is deleted and its pods are waited for before
        re-raising (``on_sigterm: detach`` leaves it running on SIGTERM and SIGHUP).

        Raises:
            ConfigurationError: If the settings or inputs are invalid; nothing is sent.
            StepError: If the step did not succeed (the subclass says why).
            ApiError: If the API server refused a request.
        """
        self.step_run(info, entrypoint_command, environment).run()

    # -- the non-blocking form ------------------------------------------------------------

    def submit(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Submit the step's Job and return at once; follow it with ``get_status`` or ``wait``."""
        self.step_run(info, entrypoint_command, environment).submit()

    def get_status(self, info: StepRunInfo) -> ExecutionStatus:
        """The step's status, read from its Job and pods."""
        settings = self.get_settings(info)
        return self.status_of(
            self.namespace_of(settings), _identity(info), ranks=settings.num_nodes
        )

    def wait(self, info: StepRunInfo) -> None:
        """Wait for a submitted step to end, as ``launch`` does.

        Raises:
            StepError: If the step did not succeed.
        """
        settings = self.get_settings(info)
        self.follow(self.namespace_of(settings), _identity(info), settings)

    def cancel(self, info: StepRunInfo) -> None:
        """Delete the step's Job and wait until none of its pods is left."""
        settings = self.get_settings(info)
        self.cancel_step(self.namespace_of(settings), _identity(info), settings)

    # -- the same, by step identity (integrations know a step run, not its run info) ------------

    def step_run(
        self,
        info: StepRunInfo,
        entrypoint_command: Sequence[str],
        environment: Mapping[str, str],
        *,
        settings: KubernetesJobStepOperatorSettings | None = None,
        secret_environment: Mapping[str, str] | None = None,
    ) -> StepRun:
        """The runner of one step, with its Job built (nothing is sent yet).

        Args:
            info: The step run.
            entrypoint_command: The container's command.
            environment: Plain environment variables (they appear in the Job).
            settings: The merged settings, when the caller has them already.
            secret_environment: Variables whose values must not appear in the Job (an API
                token): they go into a Secret created right after the Job and owned by it
                (removed with it); the container reads them from there.

        Raises:
            ConfigurationError: If the settings or inputs are invalid; nothing is sent.
        """
        settings = settings or self.get_settings(info)
        secrets = dict(secret_environment or {})
        job = self._build(info, entrypoint_command, environment, settings, secrets)
        companion: Callable[[Job], Mapping[str, Any]] | None = None
        if secrets:

            def companion(created: Job) -> Mapping[str, Any]:
                return build_env_secret(job, secrets, job_uid=str(created["metadata"]["uid"]))

        return self._runner(job, _identity(info), settings, companion=companion)

    def attach(
        self,
        step: StepIdentity,
        *,
        namespace: str | None = None,
        settings: KubernetesJobStepOperatorSettings | None = None,
    ) -> StepRun:
        """The runner of a step run whose Job exists already, with that Job found.

        The one way to follow, cancel or read a step another process submitted (or this one,
        before a restart).

        Args:
            step: The step run.
            namespace: Where its Job is (``None``: ``settings.namespace``, else kubectl's
                choice).
            settings: The step's merged settings (``None``: the component's config).

        Raises:
            NotFoundError: The step run has no Job.
            NameCollisionError: The Job of that name belongs to another run, step or attempt.
        """
        settings = settings or self.get_settings(StepConfiguration())
        namespace = namespace or self.namespace_of(settings)
        run = self._runner(self._ref(namespace, step, settings.num_nodes), step, settings)
        run.attach()
        return run

    def follow(
        self,
        namespace: str,
        step: StepIdentity,
        settings: KubernetesJobStepOperatorSettings,
        *,
        interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    ) -> None:
        """Wait for the Job of a submitted step run, cleaning up if the caller is interrupted.

        Args:
            namespace: The Job's namespace.
            step: The step run.
            settings: The step's merged settings.
            interrupts: The exceptions that mean "the caller is going away" (a framework may
                turn Ctrl-C into its own): the Job is deleted (or left, per ``on_sigterm``) and
                the exception re-raised.

        Raises:
            StepError: If the step did not succeed.
            NotFoundError: If the step run has no Job.
        """
        self.attach(step, namespace=namespace, settings=settings).follow_or_clean_up(
            interrupts=interrupts
        )

    def status_of(self, namespace: str, step: StepIdentity, *, ranks: int = 1) -> ExecutionStatus:
        """The status of a step run's Job (``STOPPED`` when it has none).

        ``ranks`` is the step's ``num_nodes``: the Job of a step on several nodes may have a
        shorter name.
        """
        name = job_name(step.run_id, step.step_name, step.step_run_id, ranks=ranks)
        obs = job_status(self.access(), namespace, name)
        if obs is None:
            return ExecutionStatus.STOPPED
        return _STATUS[obs.phase]

    def cancel_step(
        self,
        namespace: str,
        step: StepIdentity,
        settings: KubernetesJobStepOperatorSettings,
    ) -> None:
        """Delete a step run's Job and wait until none of its pods is left."""
        try:
            run = self.attach(step, namespace=namespace, settings=settings)
        except (NotFoundError, NameCollisionError):
            return  # no Job, or the name holds another step run's Job: not ours to delete
        run.cancel()

    # -- plumbing -------------------------------------------------------------------------

    def access(self) -> KubeAccess:
        """The operator's API access, connected on first use.

        Raises:
            ConfigurationError: If no cluster configuration can be found or loaded.
        """
        with self._lock:
            if self._access is None:
                loaded = load_client(
                    self.config.kubeconfig_path,
                    self.config.kubernetes_context,
                    self.config.incluster,
                )
                self._context_namespace = loaded.namespace
                self._access = KubeApi(loaded.api_client)
                self._access.on_retry = self._retrying
                self._nodes = NodeView(self._access)
                self._autoscalers = AutoscalerView(self._access)
                self._queues = QueueView(self._access)
            return self._access

    def _retrying(self, operation: str, error: str, delay: float, attempt: int = 0) -> None:
        self._events.publish(
            Retrying(
                at=datetime.now(UTC),
                operation=operation,
                error=error,
                delay=delay,
                attempt=attempt,
            )
        )

    def namespace_of(self, settings: KubernetesJobStepOperatorSettings) -> str:
        """Where the step's Job goes: ``settings.namespace``, else kubectl's choice.

        kubectl's choice is the kubeconfig context's namespace, or the pod's ServiceAccount's in
        a cluster, else ``default``.
        """
        if settings.namespace:
            return settings.namespace
        self.access()
        return self._context_namespace

    def _build(
        self,
        info: StepRunInfo,
        entrypoint_command: Sequence[str],
        environment: Mapping[str, str],
        settings: KubernetesJobStepOperatorSettings,
        secret_environment: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        # Validated first: bad input is reported before any cluster configuration is read. With
        # no namespace set, the Job goes where kubectl would put it (the context's namespace).
        job = build_job(
            info,
            entrypoint_command,
            environment,
            settings,
            secret_environment=secret_environment or {},
            gpu_label_schemes=self.gpu_label_schemes,
        )
        if settings.namespace is None:
            job["metadata"]["namespace"] = self.namespace_of(settings)
        return job

    def _ref(self, namespace: str, step: StepIdentity, ranks: int = 1) -> Job:
        name = job_name(step.run_id, step.step_name, step.step_run_id, ranks=ranks)
        return {"metadata": {"name": name, "namespace": namespace}}

    def _runner(
        self,
        job: Mapping[str, Any],
        step: StepIdentity,
        settings: KubernetesJobStepOperatorSettings,
        *,
        companion: Callable[[Job], Mapping[str, Any]] | None = None,
    ) -> StepRun:
        access = self.access()
        return StepRun(
            access,
            job,
            step=step,
            settings=settings,
            watchers=self._watchers,
            events=self._events,
            nodes=self._nodes,
            autoscalers=self._autoscalers,
            queues=self._queues,
            companion=companion,
        )


def _identity(info: StepRunInfo) -> StepIdentity:
    return StepIdentity(str(info.run_id), str(info.pipeline_step_name), str(info.step_run_id))


_STATUS = {
    Phase.SUBMITTED: ExecutionStatus.INITIALIZING,
    Phase.QUEUED: ExecutionStatus.QUEUED,
    Phase.SCHEDULING: ExecutionStatus.PROVISIONING,
    Phase.SCALING_UP: ExecutionStatus.PROVISIONING,
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
