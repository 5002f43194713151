"""The size bounds the builder checks agree with what the API server stores.

A Job just under ``MAX_OBJECT_BYTES`` is created for real (a server-side dry run never reaches
etcd, whose request limit is the one that matters); one just over it is refused by the builder,
and the server would have refused it too, with a 422 about a label that names nothing of ours.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperatorSettings,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._job.kube_syntax import MAX_OBJECT_BYTES

pytestmark = pytest.mark.cluster

KIB = 1024


def job_with_env(namespace: str, run: str, variables: int, last: int) -> dict[str, object]:
    info = StepRunInfo(
        step_run_id=run, run_id=run, pipeline_step_name="big", images={"default": "img:1"}
    )
    env = {f"V{i}": "x" * (120 * KIB) for i in range(variables)}
    env["LAST"] = "y" * last
    settings = KubernetesJobStepOperatorSettings(
        namespace=namespace, pod_annotations={"sim.k8s-step-operator.io/run-duration": "1s"}
    )
    return build_job(info, ["true"], env, settings)


def size(job: object) -> int:
    return len(json.dumps(job, separators=(",", ":")))


def test_the_largest_job_the_builder_allows_is_stored(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    batch = k8s.BatchV1Api(api_client)
    # Fill up to just under the bound with 120 KiB variables (each under the kernel's limit).
    base = size(job_with_env(namespace, "probe", 0, 0))
    per = size(job_with_env(namespace, "probe", 1, 0)) - base
    count = (MAX_OBJECT_BYTES - base) // per
    last = MAX_OBJECT_BYTES - size(job_with_env(namespace, "probe", count, 0)) - 64
    job = job_with_env(namespace, "fits", count, max(0, min(last, 120 * KIB)))
    assert MAX_OBJECT_BYTES - 200 * KIB < size(job) <= MAX_OBJECT_BYTES
    batch.create_namespaced_job(namespace, job)  # stored: no 422, no 413
    with pytest.raises(ConfigurationError) as raised:
        job_with_env(namespace, "over", count + 1, 120 * KIB)
    assert raised.value.field == "environment"


def test_the_server_refuses_what_the_builder_refuses_in_its_own_words(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    # What used to reach the server: a 2 MiB value, answered with a 422 about a label.
    batch = k8s.BatchV1Api(api_client)
    with pytest.raises(ConfigurationError) as raised:
        job_with_env(namespace, "huge", 0, 2 << 20)
    assert raised.value.field == "environment['LAST']"
    unchecked = job_with_env(namespace, "probe", 0, 0)
    container = unchecked["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    container["env"].append({"name": "HUGE", "value": "z" * (2 << 20)})
    with pytest.raises(ApiException) as refused:
        batch.create_namespaced_job(namespace, unchecked)
    assert refused.value.status in (413, 422, 500)
