"""ZenML's step operator, delegating every action to the one core implementation.

ZenML 0.98 calls, for a step of a static pipeline, ``submit_with_allocation`` (its base calls
``submit``), then ``wait(step_run)`` and always ``cleanup_step_submission(step_run)``; the
dynamic-pipeline runner polls ``get_status(step_run)`` and calls ``cancel(step_run)``; an
operator whose ``submit`` is missing gets the legacy ``launch``. Each maps onto the core: one
Job per step run (a retry is a new step run, so a new Job; a restarted caller reattaches to its
own), followed by the core's watch, diagnosed and cancelled by the core.

Two things are ZenML's own:

* ZenML turns Ctrl-C and SIGTERM into its ``RunInterruptedException`` (or
  ``RunStoppedException``) and calls ``cancel`` only for dynamic pipelines; ``wait`` passes those
  exceptions to the core as interrupts, so the Job and its pods are deleted before they reach
  ZenML.
* A failed step makes ``wait`` raise the core's ``StepError`` (exit code, reason, log tail)
  after handing it to ZenML as the step's exception information, so that ZenML shows and
  stores the diagnosis; a step that raised keeps its own traceback, which its pod stored first.
* Each step's timeline and diagnosis become the step run's metadata (``run_metadata``):
  recorded in ``cleanup_step_submission``, which ZenML calls after ``wait``, so that ZenML sees
  the step's end without waiting for the recording. The dynamic-pipeline runner polls
  ``get_status`` instead of calling ``wait``: its first poll of a step run starts a follower
  thread (the core's watch, log streaming included), which records the end as soon as it sees
  it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, cast

from zenml.config.build_configuration import BuildConfiguration
from zenml.enums import ExecutionStatus
from zenml.exceptions import RunInterruptedException, RunStoppedException
from zenml.step_operators import BaseStepOperator
from zenml.utils import settings_utils

from k8s_step_operator import (
    ConfigurationError,
    Finished,
    NotFoundError,
    StepError,
    StepOperatorError,
    StepRun,
)
from k8s_step_operator import KubernetesJobStepOperator as CoreOperator
from k8s_step_operator import KubernetesJobStepOperatorConfig as CoreConfig
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings
from k8s_step_operator._step_operator_api.settings_keys import component_keys, misdirected_keys
from k8s_step_operator.integrations.zenml import _compat, _convert, probe, run_metadata
from k8s_step_operator.integrations.zenml.config import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
)
from k8s_step_operator.integrations.zenml.ranks import RankEntrypointConfiguration
from k8s_step_operator.integrations.zenml.validation import check_stack

if TYPE_CHECKING:
    from zenml.config.step_run_info import StepRunInfo
    from zenml.models import PipelineSnapshotBase, StepRunResponse
    from zenml.stack import Stack, StackValidator

__all__ = ["INTERRUPTS", "KubernetesJobStepOperator"]

log = logging.getLogger(__name__)

# How long cleanup waits for a follower thread to see its Job's end (the Job has ended when
# ZenML's dynamic runner cleans up: the watch has it within a second).
FOLLOWER_JOIN_SECONDS = 30.0

# What "the caller is going away" looks like under ZenML: its signal handler raises its own
# exceptions on SIGINT and SIGTERM.
INTERRUPTS: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    RunInterruptedException,
    RunStoppedException,
)


def _publish_diagnosis(error: BaseException) -> None:
    """Make ``error`` the step's exception information, should ZenML record the failure.

    ZenML records it only when the step's own process did not (an OOM kill, a step that never
    started); a step that raised has stored its traceback already and keeps it.
    """
    from zenml.orchestrators import publish_utils
    from zenml.utils import exception_utils

    publish_utils.step_exception_info.set(exception_utils.collect_exception_information(error))


class KubernetesJobStepOperator(BaseStepOperator):
    """Runs each ZenML step run as a Kubernetes Job, through the core step operator."""

    _core_lock = threading.RLock()

    @property
    def config(self) -> KubernetesJobStepOperatorConfig:
        """The component's configuration."""
        return cast(KubernetesJobStepOperatorConfig, self._config)

    @property
    def settings_class(self) -> type[KubernetesJobStepOperatorSettings]:
        """Steps override ``KubernetesJobStepOperatorSettings`` fields."""
        return KubernetesJobStepOperatorSettings

    @property
    def entrypoint_config_class(self) -> type[RankEntrypointConfiguration]:
        """ZenML's step entrypoint, with ranks above 0 of a step on several nodes as workers."""
        return RankEntrypointConfiguration

    @property
    def core(self) -> CoreOperator:
        """The core step operator doing the work (one per component, made on first use).

        The dynamic-pipeline runner calls from several threads: they share it.
        """
        core: CoreOperator | None = self.__dict__.get("_core")
        if core is None:
            with self._core_lock:
                core = self.__dict__.get("_core")
                if core is None:
                    fields = set(CoreConfig.model_fields)
                    config = CoreConfig.model_validate(
                        self.config.model_dump(include=fields, exclude_unset=True)
                    )
                    core = CoreOperator(self.name, config=config)
                    core.subscribe(self.recorder.on_event)
                    self.__dict__["_core"] = core
        return core

    @property
    def recorder(self) -> run_metadata.Recorder:
        """Keeps the end of each step run until it is recorded as the step's metadata."""
        with self._core_lock:
            recorder: run_metadata.Recorder | None = self.__dict__.get("_recorder")
            if recorder is None:
                recorder = self.__dict__["_recorder"] = run_metadata.Recorder()
        return recorder

    # -- settings -------------------------------------------------------------------------

    def get_settings(self, container: Any) -> KubernetesJobStepOperatorSettings:
        """The component's config overridden by the step's settings, plus local mode.

        ``container`` is what ZenML passes (``StepRunInfo``, ``StepRunResponse``, ``Step``...).
        The step's settings are read under ``step_operator:<component name>``, else
        ``step_operator.kubernetes_job`` (ZenML's order). Unlike ZenML's own ``get_settings``,
        only settings fields of the config are merged: the cluster access and local-mode fields
        are the component's alone.

        Raises:
            ConfigurationError: If the merged settings are invalid.
        """
        fields = set(KubernetesJobStepOperatorSettings.model_fields)
        data = self.config.model_dump(include=fields, exclude_unset=True)
        all_settings = container.config.settings
        self._warn_misdirected(all_settings)
        for key in (
            settings_utils.get_stack_component_name_setting_key(self),
            settings_utils.get_stack_component_setting_key(self),
        ):
            if key in all_settings:
                data.update(dict(all_settings[key]))
                break
        settings = KubernetesJobStepOperatorSettings.model_validate(data)
        if self.config.local and self.config.local_stores_claim:
            settings = _convert.local_mode_settings(
                settings,
                claim=self.config.local_stores_claim,
                stores_path=_local_stores_path(),
                uid=os.getuid(),
                gid=os.getgid(),
            )
        return settings

    def _warn_misdirected(self, all_settings: Any) -> None:
        """Warn once per key of settings clearly meant for a step operator that none reads.

        Only a warning: ZenML passes a pipeline's settings for other stacks' components along
        (its compiler drops those it cannot match, with a warning of its own).
        """
        warned: set[str] = self.__dict__.setdefault("_misdirected_warned", set())
        for key in misdirected_keys(all_settings, "step_operator", self.flavor, self.name):
            if key not in warned:
                warned.add(key)
                works = component_keys("step_operator", self.flavor, self.name)[:2]
                log.warning(
                    "settings under %r are read by no step operator of this stack: step "
                    "operator %r reads %r or %r",
                    key,
                    self.name,
                    *works,
                )

    def _core_settings(self, container: Any) -> CoreSettings:
        return _convert.core_settings(self.get_settings(container))

    # -- images and the stack ----------------------------------------------------------------

    def get_docker_builds(self, snapshot: PipelineSnapshotBase) -> list[BuildConfiguration]:
        """One image for every step this component runs (``StepRunInfo.get_image`` reads it)."""
        return [
            BuildConfiguration(
                key=_convert.IMAGE_KEY, settings=step.config.docker_settings, step_name=name
            )
            for name, step in snapshot.step_configurations.items()
            if step.config.uses_step_operator(self.name)
        ]

    @property
    def validator(self) -> StackValidator | None:
        """Refuses a stack whose step pods could not reach ZenML's stores, saying what works."""
        from zenml.stack import StackValidator

        return StackValidator(custom_validation_function=self._validate_stack)

    def _validate_stack(self, stack: Stack) -> tuple[bool, str]:
        from zenml.client import Client

        store = Client().zen_store
        facts = probe.stack_facts(
            stack,
            component=self.name,
            config=self.config,
            store_is_local=store.is_local_store(),
            store_url=str(store.config.url),
            stores_path=_local_stores_path(),
        )
        return check_stack(facts)

    # -- the calls ZenML makes ----------------------------------------------------------------

    def submit(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Create the step run's Job (or find it there) and return."""
        self._step_run(info, entrypoint_command, environment).submit()

    def launch(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Run the step and wait for its end (ZenML's legacy, synchronous form).

        Raises:
            StepError: If the step did not succeed; ZenML records the diagnosis.
        """
        run = self._step_run(info, entrypoint_command, environment)
        run.submit()
        self._follow(run)

    def wait(self, step_run: StepRunResponse) -> ExecutionStatus:
        """Follow the step run's Job to its end; ``COMPLETED``, or raise why it failed.

        On Ctrl-C or SIGTERM (ZenML's interrupt exceptions) the Job and its pods are deleted
        first, and the exception goes on to ZenML.

        Raises:
            StepError: If the step did not succeed (the subclass says why; ZenML shows it and
                stores it as the step's exception when the step stored none).
        """
        settings = self._core_settings(step_run)
        self._follow(self.core.attach(_convert.identity(step_run), settings=settings))
        return ExecutionStatus.COMPLETED

    def get_status(self, step_run: StepRunResponse) -> ExecutionStatus:
        """The step run's status, read from its Job and pods (``stopped`` when it has none).

        The first call for a step run also starts following its Job in a thread (its output
        streamed, its end recorded as the step's metadata at ``cleanup_step_submission``):
        ZenML's dynamic-pipeline runner polls this instead of calling ``wait``.
        """
        settings = self._core_settings(step_run)
        self._follow_in_background(step_run, settings)
        status = self.core.status_of(
            self.core.namespace_of(settings),
            _convert.identity(step_run),
            ranks=settings.num_nodes,
        )
        if status.value == ExecutionStatus.QUEUED.value:
            # ZenML 0.98's dynamic runner takes only initializing, provisioning and running for
            # "still on its way": a step queued by Kueue is provisioning to it.
            return ExecutionStatus.PROVISIONING
        return ExecutionStatus(status.value)

    def cancel(self, step_run: StepRunResponse) -> None:
        """Delete the step run's Job and wait until none of its pods is left."""
        settings = self._core_settings(step_run)
        self.core.cancel_step(
            self.core.namespace_of(settings), _convert.identity(step_run), settings
        )

    def cleanup_step_submission(self, step_run: StepRunResponse) -> None:
        """Record the step's timeline and diagnosis as its run metadata.

        The Job itself is left to its TTL, which removes it with its pods and its Secret.
        Recording never fails the step: a failure to record is logged.
        """
        follower = self._followers().pop(str(step_run.id), None)
        if follower is not None:
            # It records the end itself.
            follower.join(FOLLOWER_JOIN_SECONDS)
        self._record_if_ended(step_run)

    def _record_if_ended(self, step_run: StepRunResponse) -> None:
        finished = self.recorder.take(str(step_run.id))
        if finished is None:
            return
        try:
            self._record(step_run, finished)
        except Exception as e:
            log.warning("could not record the step's metadata in ZenML: %s", e)

    # -- plumbing -----------------------------------------------------------------------------

    def _step_run(
        self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]
    ) -> StepRun:
        translation = _convert.translated(self.get_settings(info))
        settings = _convert.step_pod_defaults(CoreSettings.model_validate(translation.settings))
        plain, secret = _convert.split_environment(environment)
        # ResourceSettings and pod_settings.resources disagreeing is named by both.
        step = _convert.from_step_run_info(info, settings, translation.resources)
        try:
            return self.core.step_run(
                step,
                entrypoint_command,
                plain,
                settings=settings,
                secret_environment=secret,
            )
        except ConfigurationError as e:
            # An error about a value translated from ZenML's own operator's settings names
            # the field the user wrote.
            raise _compat.rename(e, translation.origins) from e

    def _record(self, step_run: StepRunResponse, finished: Finished) -> None:
        from zenml.client import Client
        from zenml.enums import MetadataResourceTypes
        from zenml.models import RunMetadataResource

        settings = self._core_settings(step_run)
        labels = self._node_labels(finished.timeline.node) if finished.timeline.gpus else None
        metadata = run_metadata.step_metadata(
            finished, gpu_model=run_metadata.gpu_model(labels, settings)
        )
        Client().create_run_metadata(
            metadata={run_metadata.METADATA_KEY: metadata},
            resources=[RunMetadataResource(id=step_run.id, type=MetadataResourceTypes.STEP_RUN)],
            stack_component_id=self.id,
        )

    def _node_labels(self, node: str) -> dict[str, str] | None:
        """The labels of ``node``; None when nodes cannot be read (no node reader) or it is gone."""
        if not node:
            return None
        try:
            nodes = self.core.access().list_nodes()
        except StepOperatorError as e:
            log.debug("cannot read node %s for its GPU model: %s", node, e)
            return None
        for item in nodes:
            if item["metadata"]["name"] == node:
                return dict(item["metadata"].get("labels") or {})
        return None

    def _followers(self) -> dict[str, threading.Thread]:
        with self._core_lock:
            threads: dict[str, threading.Thread] = self.__dict__.setdefault("_threads", {})
        return threads

    def _follow_in_background(self, step_run: StepRunResponse, settings: CoreSettings) -> None:
        key = str(step_run.id)
        followers = self._followers()
        with self._core_lock:
            if key in followers:
                return
            thread = threading.Thread(
                target=self._follow_quietly,
                args=(step_run, settings),
                name=f"follow-{step_run.name}",
                daemon=True,
            )
            followers[key] = thread
        thread.start()

    def _follow_quietly(self, step_run: StepRunResponse, settings: CoreSettings) -> None:
        # The outcome reaches ZenML through get_status. The metadata is recorded here, as soon
        # as the Job ends: ZenML's dynamic runner may finish the pipeline (a later step only
        # waits for this one's outputs) before its monitoring loop cleans this step up.
        step = _convert.identity(step_run)
        try:
            self.core.attach(step, settings=settings).follow_or_clean_up(interrupts=())
        except (StepError, NotFoundError):
            pass
        except Exception as e:
            log.warning("following step %s stopped: %s", step.step_name, e)
        self._record_if_ended(step_run)

    def _follow(self, run: StepRun) -> None:
        try:
            run.follow_or_clean_up(interrupts=INTERRUPTS)
        except StepError as e:
            _publish_diagnosis(e)
            raise


def _local_stores_path() -> str:
    from zenml.config.global_config import GlobalConfiguration

    return str(GlobalConfiguration().local_stores_path)
