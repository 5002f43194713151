"""Run machine-learning pipeline steps as Kubernetes Jobs, with the step-operator API of ZenML.

The public surface is what ``__all__`` lists, pinned by a test. Every module whose name starts
with an underscore is private; the layers and what each may import are described in their
package docstrings (``_step_operator_api``, ``_job``, ``_kube``, ``_runner``, ``_doctor``) and
enforced by import-linter contracts in ``pyproject.toml``.
"""

from __future__ import annotations

import logging

from k8s_step_operator._errors import (
    AdmissionRejectedError,
    ApiError,
    ConfigurationError,
    ConflictError,
    ContainerConfigError,
    DeadlineExceededError,
    DeletedExternallyError,
    FieldCause,
    ForbiddenError,
    ImageError,
    InvalidError,
    NameCollisionError,
    NotFoundError,
    OOMKilledError,
    QueueError,
    ServerUnavailableError,
    StepCancelledError,
    StepError,
    StepFailedError,
    StepOperatorError,
    TooManyRequestsError,
    UnschedulableError,
)
from k8s_step_operator._job.builder import build_job
from k8s_step_operator._job.gpu import GPU_LABEL_SCHEMES, GPULabelScheme
from k8s_step_operator._job.naming import job_name, same_step
from k8s_step_operator._job.settings import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    SecretKeyRef,
    Toleration,
)
from k8s_step_operator._operator import (
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorFlavor,
)
from k8s_step_operator._runner.diagnosis import Phase, Problem
from k8s_step_operator._runner.events import (
    Admitted,
    Event,
    Finished,
    Heartbeat,
    LogLine,
    PhaseChanged,
    Preempted,
    RanksPlaced,
    Retrying,
    StepEvent,
    Submitted,
    Timeline,
)
from k8s_step_operator._runner.step_run import StepIdentity, StepRun
from k8s_step_operator._step_operator_api.base_settings import BaseSettings
from k8s_step_operator._step_operator_api.base_step_operator import (
    BaseStepOperator,
    BaseStepOperatorConfig,
    BaseStepOperatorFlavor,
)
from k8s_step_operator._step_operator_api.entrypoint_configuration import (
    BaseEntrypointConfiguration,
    StepEntrypointConfiguration,
    StepOperatorEntrypointConfiguration,
)
from k8s_step_operator._step_operator_api.enums import ExecutionStatus, StackComponentType
from k8s_step_operator._step_operator_api.resource_settings import ByteUnit, ResourceSettings
from k8s_step_operator._step_operator_api.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)

__all__ = [
    "GPU_LABEL_SCHEMES",
    "AdmissionRejectedError",
    "Admitted",
    "ApiError",
    "BaseEntrypointConfiguration",
    "BaseSettings",
    "BaseStepOperator",
    "BaseStepOperatorConfig",
    "BaseStepOperatorFlavor",
    "ByteUnit",
    "ConfigurationError",
    "ConflictError",
    "ContainerConfigError",
    "DeadlineExceededError",
    "DeletedExternallyError",
    "Event",
    "ExecutionStatus",
    "FieldCause",
    "Finished",
    "ForbiddenError",
    "GPULabelScheme",
    "Heartbeat",
    "ImageError",
    "InvalidError",
    "KubernetesJobStepOperator",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorFlavor",
    "KubernetesJobStepOperatorSettings",
    "LogLine",
    "NameCollisionError",
    "NotFoundError",
    "OOMKilledError",
    "Phase",
    "PhaseChanged",
    "PipelineConfiguration",
    "Preempted",
    "Problem",
    "QueueError",
    "RanksPlaced",
    "ResourceSettings",
    "Retrying",
    "SecretKeyRef",
    "ServerUnavailableError",
    "StackComponentType",
    "StepCancelledError",
    "StepConfiguration",
    "StepEntrypointConfiguration",
    "StepError",
    "StepEvent",
    "StepFailedError",
    "StepIdentity",
    "StepOperatorEntrypointConfiguration",
    "StepOperatorError",
    "StepRun",
    "StepRunInfo",
    "Submitted",
    "Timeline",
    "Toleration",
    "TooManyRequestsError",
    "UnschedulableError",
    "build_job",
    "job_name",
    "same_step",
]

__version__ = "0.1.0"

# A library that logs must stay silent until the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())
