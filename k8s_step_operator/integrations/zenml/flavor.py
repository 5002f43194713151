"""The ``kubernetes_job`` step-operator flavor, as ZenML registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zenml.step_operators import BaseStepOperatorFlavor

from k8s_step_operator.integrations.zenml.config import KubernetesJobStepOperatorConfig

if TYPE_CHECKING:
    from k8s_step_operator.integrations.zenml.operator import KubernetesJobStepOperator

__all__ = ["FLAVOR_NAME", "KubernetesJobStepOperatorFlavor"]

FLAVOR_NAME = "kubernetes_job"


class KubernetesJobStepOperatorFlavor(BaseStepOperatorFlavor):
    """Run each ZenML step as a Kubernetes Job, on GPU nodes when it asks for GPUs."""

    @property
    def name(self) -> str:
        """``kubernetes_job``."""
        return FLAVOR_NAME

    @property
    def display_name(self) -> str:
        """The name ZenML's dashboard and CLI show."""
        return "Kubernetes Job (k8s-step-operator)"

    @property
    def docs_url(self) -> str | None:
        """None: ZenML would otherwise make up a link into its own docs."""
        return None

    @property
    def sdk_docs_url(self) -> str | None:
        """None, for the same reason."""
        return None

    @property
    def logo_url(self) -> str:
        """Kubernetes' logo, as ZenML's own Kubernetes flavors show it."""
        return (
            "https://public-flavor-logos.s3.eu-central-1.amazonaws.com/step_operator/kubernetes.png"
        )

    @property
    def config_class(self) -> type[KubernetesJobStepOperatorConfig]:
        """``KubernetesJobStepOperatorConfig``."""
        return KubernetesJobStepOperatorConfig

    @property
    def implementation_class(self) -> type[KubernetesJobStepOperator]:
        """``KubernetesJobStepOperator``."""
        from k8s_step_operator.integrations.zenml.operator import KubernetesJobStepOperator

        return KubernetesJobStepOperator
