"""Run machine-learning pipeline steps as Kubernetes Jobs, with the step-operator API of ZenML.

The public surface is what ``__all__`` lists; every other module is an implementation detail.
"""

from __future__ import annotations

from k8s_step_operator.base_settings import BaseSettings
from k8s_step_operator.base_step_operator import (
    BaseStepOperator,
    BaseStepOperatorConfig,
    BaseStepOperatorFlavor,
)
from k8s_step_operator.entrypoint_configuration import (
    BaseEntrypointConfiguration,
    StepEntrypointConfiguration,
)
from k8s_step_operator.enums import ExecutionStatus, StackComponentType
from k8s_step_operator.errors import (
    ApiError,
    ConfigurationError,
    StepError,
    StepOperatorError,
)
from k8s_step_operator.flavor import KubernetesJobStepOperatorFlavor
from k8s_step_operator.gpu import GPULabelScheme, register_gpu_label_scheme
from k8s_step_operator.job_builder import build_job
from k8s_step_operator.naming import job_name, same_step
from k8s_step_operator.operator import KubernetesJobStepOperator
from k8s_step_operator.resource_settings import ByteUnit, ResourceSettings
from k8s_step_operator.settings import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
    SecretKeyRef,
    Toleration,
)
from k8s_step_operator.step_operator_entrypoint_configuration import (
    StepOperatorEntrypointConfiguration,
)
from k8s_step_operator.step_run_info import (
    PipelineConfiguration,
    StepConfiguration,
    StepRunInfo,
)

__all__ = [
    "ApiError",
    "BaseEntrypointConfiguration",
    "BaseSettings",
    "BaseStepOperator",
    "BaseStepOperatorConfig",
    "BaseStepOperatorFlavor",
    "ByteUnit",
    "ConfigurationError",
    "ExecutionStatus",
    "GPULabelScheme",
    "KubernetesJobStepOperator",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorFlavor",
    "KubernetesJobStepOperatorSettings",
    "PipelineConfiguration",
    "ResourceSettings",
    "SecretKeyRef",
    "StackComponentType",
    "StepConfiguration",
    "StepEntrypointConfiguration",
    "StepError",
    "StepOperatorEntrypointConfiguration",
    "StepOperatorError",
    "StepRunInfo",
    "Toleration",
    "build_job",
    "job_name",
    "register_gpu_label_scheme",
    "same_step",
]

__version__ = "0.1.0"
