"""What the stack check asks the cluster, asked of a real one: whether an identity has the RBAC
the operator needs in the steps' namespace, and whether the Services URLs name exist.

The chart's pipeline account has everything; a namespace's ``default`` account has nothing; a
kubeconfig user is asked about itself. The whole refusal, through ZenML with its kubernetes
orchestrator, is in ``test_zenml_production.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from kubernetes import config as k8s_config  # noqa: E402

from k8s_step_operator.integrations.zenml import probe  # noqa: E402
from k8s_step_operator.integrations.zenml.validation import ClusterService  # noqa: E402
from tests.zenml_integration.conftest import chart_in_namespace  # noqa: E402

pytestmark = pytest.mark.cluster


def test_the_charts_pipeline_account_has_what_the_operator_needs_and_default_has_not(
    helm_bin: str, kubeconfig_path: Path, api_client: Any, namespace: str, tmp_path: Path
) -> None:
    with chart_in_namespace(helm_bin, kubeconfig_path, api_client, namespace, tmp_path) as chart:
        assert (
            probe.missing_permissions(api_client, namespace, (namespace, chart.pipeline_account))
            == ()
        )
        missing = probe.missing_permissions(api_client, namespace, (namespace, "default"))
        assert missing is not None
        assert {"create jobs.batch", "watch pods", "get pods/log", "create secrets"} <= set(missing)
        # The chart's account asked about itself (a pipeline given its kubeconfig): all there.
        own = k8s_config.new_client_from_config(config_file=str(chart.kubeconfig))
        try:
            assert probe.missing_permissions(own, namespace, None) == ()
            # It may not ask about others: the check cannot tell, and says so with None.
            assert probe.missing_permissions(own, namespace, (namespace, "default")) is None
        finally:
            own.close()


def test_urls_naming_services_the_cluster_lacks(api_client: Any) -> None:
    present = "https://kubernetes.default.svc.cluster.local:443"
    absent = "http://zenml.no-such-namespace.svc.cluster.local:8080"
    outside = "https://s3.eu-west-1.amazonaws.com"
    assert probe.missing_services(api_client, [present, absent, outside]) == {
        absent: ClusterService("zenml", "no-such-namespace")
    }
