"""The chart's pipeline account running ZenML's kubernetes orchestrator: with
``pipeline.rbac.zenmlOrchestrator`` it gets exactly one verb more (patch on jobs: ZenML's
orchestrator pod writes its run into its own Job's annotations), proven as the rest of the
chart's RBAC is: by real requests as the account, and by the server's own list of what it may do.
Everything else ZenML's orchestrator pod and its step pods do, the Role grants already (the
pipelines of ``tests/zenml_integration/test_zenml_production.py`` run as this account).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from kubernetes import client as k8s

from tests.cluster.test_rbac import (
    NODE_RULES,
    OPERATOR_RULES,
    SELF_REVIEWS,
    _rules,
    status_of,
    step_job,
)

if TYPE_CHECKING:
    from tests.cluster.conftest import InstallChart

pytestmark = pytest.mark.cluster

ZENML_ORCHESTRATOR_RULES = {("batch", "jobs", "patch")}
ANNOTATION = {"metadata": {"annotations": {"zenml.io/run_id": str(uuid.uuid4())}}}


def test_zenml_orchestrator_adds_patch_on_jobs_and_nothing_else(
    install_chart: InstallChart, namespace: str
) -> None:
    sa = install_chart(namespace, {"pipeline": {"rbac": {"zenmlOrchestrator": True}}})
    rules = _rules(sa.api_client, namespace) - SELF_REVIEWS
    assert rules == OPERATOR_RULES | NODE_RULES | ZENML_ORCHESTRATOR_RULES
    batch = k8s.BatchV1Api(sa.api_client)
    name = f"orchestrator-{uuid.uuid4().hex[:6]}"
    batch.create_namespaced_job(namespace, step_job(name, sa.step_service_account))
    patched = batch.patch_namespaced_job(name, namespace, ANNOTATION)
    assert (
        patched.metadata.annotations["zenml.io/run_id"]
        == (ANNOTATION["metadata"]["annotations"]["zenml.io/run_id"])
    )
    # Still nothing on pods but reading them, and only here.
    core = k8s.CoreV1Api(sa.api_client)
    assert status_of(core.delete_namespaced_pod, "any", namespace) == 403
    assert status_of(batch.patch_namespaced_job, name, "default", ANNOTATION) == 403
    batch.delete_namespaced_job(name, namespace, propagation_policy="Background")


def test_without_it_the_account_may_not_patch_jobs(
    install_chart: InstallChart, namespace: str
) -> None:
    sa = install_chart(namespace)
    batch = k8s.BatchV1Api(sa.api_client)
    name = f"orchestrator-{uuid.uuid4().hex[:6]}"
    batch.create_namespaced_job(namespace, step_job(name, sa.step_service_account))
    assert status_of(batch.patch_namespaced_job, name, namespace, ANNOTATION) == 403
    batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
