"""The server path on the cluster, with no ZenML server: the API token ZenML gives a step run
reaches the step's container from the Job's own Secret, never through the Job.

The ZenML step operator is driven the way ZenML's step launcher drives it (``submit``, ``wait``,
the legacy ``launch``), as the Helm chart's pipeline ServiceAccount; the step is a shell
command that prints a digest of the token it sees, so the token itself is printed nowhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from kubernetes import client as k8s  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from zenml.config import DockerSettings  # noqa: E402
from zenml.config import ResourceSettings as ZenMLResources  # noqa: E402
from zenml.enums import ExecutionStatus, StackComponentType  # noqa: E402

from k8s_step_operator.integrations.zenml import (  # noqa: E402
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
)
from tests.zenml_integration.conftest import (  # noqa: E402
    REAL_NODE_PLACEMENT,
    ChartInstall,
    chart_in_namespace,
)

pytestmark = pytest.mark.realnode

SHELL_IMAGE = "localhost/k8s-step-operator-shell:dev"
TOKEN = "zenml-workload-token-" + uuid.uuid4().hex
SERVER = {
    "ZENML_STORE_TYPE": "rest",
    "ZENML_STORE_URL": "https://zenml.example.com",
    "ZENML_STORE_VERIFY_SSL": "True",
    "ZENML_STORE_API_TOKEN": TOKEN,
    "DISABLE_CREDENTIALS_DISK_CACHING": "true",
    "ZENML_STEP_OPERATOR": "True",
}
COMMAND = [
    "sh",
    "-c",
    'printf %s "$ZENML_STORE_API_TOKEN" | sha256sum; echo "store=$ZENML_STORE_URL"',
]


@pytest.fixture
def chart(
    helm_bin: str, kubeconfig_path: Path, api_client: Any, namespace: str, tmp_path: Path
) -> Any:
    with chart_in_namespace(helm_bin, kubeconfig_path, api_client, namespace, tmp_path) as c:
        yield c


@pytest.fixture
def operator(chart: ChartInstall) -> Iterator[KubernetesJobStepOperator]:
    now = datetime.now()
    config = KubernetesJobStepOperatorConfig(
        kubeconfig_path=str(chart.kubeconfig),
        namespace=chart.namespace,
        service_account_name=chart.step_account,
        image_pull_policy="IfNotPresent",
        pending_timeout=120,
        **REAL_NODE_PLACEMENT,
    )
    operator = KubernetesJobStepOperator(
        name="k8s",
        id=uuid.uuid4(),
        config=config,
        flavor="kubernetes_job",
        type=StackComponentType.STEP_OPERATOR,
        user=None,
        created=now,
        updated=now,
    )
    yield operator
    # Its watches end before the chart (and the account's token) goes.
    operator.core.close()


def info_and_step_run(run_id: uuid.UUID, step_run_id: uuid.UUID) -> tuple[Any, Any]:
    """What ZenML hands the operator for one step run: its StepRunInfo and StepRunResponse."""
    docker = DockerSettings(parent_image=SHELL_IMAGE, skip_build=True)
    config = SimpleNamespace(
        settings={}, resource_settings=ZenMLResources(memory="64MiB"), docker_settings=docker
    )

    def get_image(key: str) -> str:
        raise RuntimeError(
            "Missing build for snapshot (a dynamic pipeline on a local orchestrator)"
        )

    info = SimpleNamespace(
        step_run_id=step_run_id,
        run_id=run_id,
        run_name="server-mode",
        pipeline_step_name="report",
        config=config,
        pipeline=SimpleNamespace(name="p"),
        get_image=get_image,
    )
    step_run = SimpleNamespace(
        id=step_run_id, pipeline_run_id=run_id, name="report", config=SimpleNamespace(settings={})
    )
    return info, step_run


def step_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator.step"]


def test_the_token_reaches_the_step_from_the_jobs_own_secret(
    operator: KubernetesJobStepOperator,
    api_client: Any,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = k8s.BatchV1Api(api_client)
    core = k8s.CoreV1Api(api_client)
    info, step_run = info_and_step_run(uuid.uuid4(), uuid.uuid4())
    with caplog.at_level(logging.INFO):
        operator.submit_with_allocation(
            info=info,
            entrypoint_command=COMMAND,
            environment=dict(SERVER),
            allocated_resource_request=None,
        )
        # A caller that submits the same step run again (a restart) adopts its Job.
        operator.submit(info=info, entrypoint_command=COMMAND, environment=dict(SERVER))
        (job,) = batch.list_namespaced_job(namespace).items
        assert TOKEN not in json.dumps(api_client.sanitize_for_serialization(job))
        secret = core.read_namespaced_secret(job.metadata.name + "-env", namespace)
        (owner,) = secret.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Job", job.metadata.name, job.metadata.uid)
        assert operator.wait(step_run) is ExecutionStatus.COMPLETED
    lines = step_lines(caplog)
    assert any(hashlib.sha256(TOKEN.encode()).hexdigest() in line for line in lines), lines
    assert "store=https://zenml.example.com" in lines
    assert operator.get_status(step_run) is ExecutionStatus.COMPLETED
    operator.cleanup_step_submission(step_run)

    # The Secret goes with its Job.
    batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_secret(job.metadata.name + "-env", namespace)
        except ApiException as e:
            assert e.status == 404
            break
        assert time.monotonic() < deadline, "the Job's Secret outlived it"
        time.sleep(0.5)


def test_legacy_launch_and_a_retry_get_a_job_each(
    operator: KubernetesJobStepOperator, api_client: Any, namespace: str
) -> None:
    run_id = uuid.uuid4()
    first, first_run = info_and_step_run(run_id, uuid.uuid4())
    retry, retry_run = info_and_step_run(run_id, uuid.uuid4())
    operator.launch(info=first, entrypoint_command=COMMAND, environment=dict(SERVER))
    operator.launch(info=retry, entrypoint_command=COMMAND, environment=dict(SERVER))
    jobs = k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items
    assert len(jobs) == 2
    assert {j.metadata.annotations["k8s-step-operator.io/step-run-id"] for j in jobs} == {
        str(first.step_run_id),
        str(retry.step_run_id),
    }
    assert operator.get_status(first_run) is ExecutionStatus.COMPLETED
    operator.cancel(retry_run)
    assert operator.get_status(retry_run) is ExecutionStatus.STOPPED
    assert operator.get_status(first_run) is ExecutionStatus.COMPLETED
