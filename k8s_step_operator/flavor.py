"""The ``kubernetes_job`` flavor: names the step operator and its config class.

Registered as the entry point ``k8s_step_operator.flavors: kubernetes_job``.
"""

from __future__ import annotations

from k8s_step_operator.base_step_operator import BaseStepOperatorFlavor
from k8s_step_operator.operator import FLAVOR_NAME, KubernetesJobStepOperator
from k8s_step_operator.settings import KubernetesJobStepOperatorConfig

__all__ = ["KubernetesJobStepOperatorFlavor"]


class KubernetesJobStepOperatorFlavor(BaseStepOperatorFlavor):
    """Run each step as a Kubernetes Job."""

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
