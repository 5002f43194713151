"""ZenML 0.98's step-operator flavor ``kubernetes_job``: each step run becomes a Kubernetes Job.

The classes here subclass ZenML's own flavor, config, settings and step operator, and delegate
every action to the one core implementation (``k8s_step_operator.KubernetesJobStepOperator``):
building, submitting, watching, diagnosing and cancelling Jobs is never written twice.

Importing this package imports ZenML: install ``k8s-step-operator[zenml]``. Nothing else in the
package imports it (an import-linter contract says so). Register the flavor with::

    zenml step-operator flavor register \
        k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor
"""

from __future__ import annotations

try:
    import zenml  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "k8s_step_operator.integrations.zenml needs ZenML: pip install 'k8s-step-operator[zenml]'"
    ) from exc

from k8s_step_operator.integrations.zenml.config import (
    KubernetesJobStepOperatorConfig,
    KubernetesJobStepOperatorSettings,
)
from k8s_step_operator.integrations.zenml.flavor import (
    FLAVOR_NAME,
    KubernetesJobStepOperatorFlavor,
)
from k8s_step_operator.integrations.zenml.operator import KubernetesJobStepOperator

__all__ = [
    "FLAVOR_NAME",
    "KubernetesJobStepOperator",
    "KubernetesJobStepOperatorConfig",
    "KubernetesJobStepOperatorFlavor",
    "KubernetesJobStepOperatorSettings",
]
