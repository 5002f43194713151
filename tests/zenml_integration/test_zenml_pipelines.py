"""Real ZenML pipelines on the step operator, end to end on the real node, in local mode.

Each test runs a pipeline of ``pipelines/zpipelines.py`` with ``python zpipelines.py NAME`` in
the module's ZenML (SQLite store, local artifact store on a PersistentVolume of the real node),
then reads what ZenML recorded and what is left on the cluster. The operator acts as the Helm
chart's pipeline ServiceAccount.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from kubernetes import client as k8s  # noqa: E402

from k8s_step_operator._job.keys import LABEL_RUN_ID, LABEL_STEP_NAME  # noqa: E402
from tests.zenml_integration.conftest import REAL_NODE, ZenMLStack  # noqa: E402

pytestmark = pytest.mark.realnode


def jobs_of(api_client: Any, namespace: str, run_id: str, step: str | None = None) -> list[Any]:
    selector = f"{LABEL_RUN_ID}={run_id}"
    if step is not None:
        selector += f",{LABEL_STEP_NAME}={step}"
    batch = k8s.BatchV1Api(api_client)
    return list(batch.list_namespaced_job(namespace, label_selector=selector).items)


def pods_of_run(api_client: Any, namespace: str, run_id: str) -> list[Any]:
    core = k8s.CoreV1Api(api_client)
    return list(
        core.list_namespaced_pod(namespace, label_selector=f"{LABEL_RUN_ID}={run_id}").items
    )


def output(done: Any) -> str:
    return f"{done.stdout}\n{done.stderr}"


def test_three_steps_complete_and_the_gpu_step_ran_as_a_gpu_job(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    project = zenml_stack.project
    done = project.pipeline("three_steps")
    assert done.returncode == 0, output(done)
    run = project.last_run("three_steps")
    assert run["status"] == "completed"
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("load_data", "completed"),
        ("train", "completed"),
        ("evaluate", "completed"),
    ]
    # The steps' own output came back through the operator's log stream.
    assert "train: 10 samples" in output(done)
    assert "evaluate: model=5.5" in output(done)

    # One Job per step; the GPU step's asks for a GPU, and ran on the real node.
    jobs = jobs_of(api_client, zenml_stack.namespace, run["id"])
    assert sorted(j.metadata.labels[LABEL_STEP_NAME] for j in jobs) == [
        "evaluate",
        "load_data",
        "train",
    ]
    (train,) = [j for j in jobs if j.metadata.labels[LABEL_STEP_NAME] == "train"]
    resources = train.spec.template.spec.containers[0].resources
    assert resources.requests["nvidia.com/gpu"] == "1"
    assert resources.limits["nvidia.com/gpu"] == "1"
    # Step settings under the flavor's key and under the component's.
    dshm = [v for v in train.spec.template.spec.volumes or [] if v.name == "dshm"]
    assert dshm and dshm[0].empty_dir.size_limit == "128Mi"
    (evaluate,) = [j for j in jobs if j.metadata.labels[LABEL_STEP_NAME] == "evaluate"]
    assert evaluate.spec.template.metadata.labels["zenml-key"] == "component"
    (load,) = [j for j in jobs if j.metadata.labels[LABEL_STEP_NAME] == "load_data"]
    assert "nvidia.com/gpu" not in (load.spec.template.spec.containers[0].resources.requests or {})
    pods = pods_of_run(api_client, zenml_stack.namespace, run["id"])
    assert {p.spec.node_name for p in pods} == {REAL_NODE}
    assert all(p.status.phase == "Succeeded" for p in pods)

    # What `zenml pipeline runs list` shows.
    listed = project.zenml("pipeline", "runs", "list", "-c", "name,status", "-o", "tsv")
    assert listed.returncode == 0, output(listed)
    assert f"{run['name']}\tcompleted" in listed.stdout


def test_a_step_that_raises_fails_the_run_with_its_traceback_and_our_diagnosis(
    zenml_stack: ZenMLStack,
) -> None:
    project = zenml_stack.project
    done = project.pipeline("failing")
    assert done.returncode != 0
    text = output(done)
    # Our diagnosis, as ZenML shows it: the exit code and the log's last lines.
    assert "Failed to run step `explode`" in text
    assert "exited with code 1" in text or "exit code 1" in text, text
    assert "ValueError: boom in the step after 10 samples" in text
    run = project.last_run("failing")
    assert run["status"] == "failed"
    (step,) = [s for s in run["steps"] if s["name"] == "explode"]
    assert step["status"] == "failed"
    # The step's own traceback, stored by its pod.
    assert "ValueError" in step["traceback"]
    assert "boom in the step" in step["traceback"]
    assert "zpipelines.py" in step["traceback"]


def test_an_oom_killed_step_is_reported_as_oom(zenml_stack: ZenMLStack) -> None:
    project = zenml_stack.project
    done = project.pipeline("oom")
    assert done.returncode != 0
    text = output(done)
    assert "OOM" in text, text
    run = project.last_run("oom")
    (step,) = run["steps"]
    assert step["status"] == "failed"
    # The pod could not record anything: ZenML stores our diagnosis.
    assert step["message"] and "OOM" in step["message"], step
    assert "137" in step["message"]


def test_a_retried_step_gets_a_new_job_and_succeeds(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    project = zenml_stack.project
    done = project.pipeline("retried")
    assert done.returncode == 0, output(done)
    run = project.last_run("retried")
    assert run["status"] == "completed"
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("flaky", "retried"),
        ("flaky", "completed"),
    ]
    attempts = [s["id"] for s in run["steps"]]
    jobs = jobs_of(api_client, zenml_stack.namespace, run["id"], "flaky")
    assert len(jobs) == 2
    by_attempt = {j.metadata.annotations["k8s-step-operator.io/step-run-id"]: j for j in jobs}
    assert set(by_attempt) == set(attempts)
    assert by_attempt[attempts[0]].status.failed == 1
    assert by_attempt[attempts[1]].status.succeeded == 1


def test_an_unschedulable_gpu_step_fails_fast_with_the_schedulers_reason(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    project = zenml_stack.project
    started = time.monotonic()
    done = project.pipeline("unschedulable")
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    text = output(done)
    assert "Insufficient nvidia.com/gpu" in text, text
    assert "no node could ever fit" in text, text
    run = project.last_run("unschedulable")
    (step,) = run["steps"]
    assert step["status"] == "failed"
    assert "Insufficient nvidia.com/gpu" in (step["message"] or "")
    # Far below the pending timeout (120 s here): the fit check knows at once.
    assert elapsed < 90, elapsed
    # The unschedulable Job was deleted.
    assert jobs_of(api_client, zenml_stack.namespace, run["id"]) == []


def test_sigint_deletes_the_running_steps_job_and_pods(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    project = zenml_stack.project
    proc = project.start_pipeline("long_running", env={"LONG_STEP_SECONDS": "300"})
    try:
        run_id = _running_run(zenml_stack, api_client, "long_running")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "interrupted" in out
    assert jobs_of(api_client, zenml_stack.namespace, run_id) == []
    assert pods_of_run(api_client, zenml_stack.namespace, run_id) == []
    run = project.last_run("long_running")
    assert run["status"] == "failed"


def test_a_restarted_caller_follows_the_step_runs_own_job(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    """get_status and wait from another process, by the step run ZenML stored."""
    project = zenml_stack.project
    proc = project.start_pipeline("long_running", env={"LONG_STEP_SECONDS": "20"})
    try:
        _running_run(zenml_stack, api_client, "long_running")
        (step,) = project.last_run("long_running")["steps"]
        assert project.tool("status", step["id"]) == "running"
        # A second caller (a restarted one) follows the same Job to its end.
        assert project.tool("wait", step["id"], timeout=180) == "completed"
        assert project.tool("status", step["id"]) == "completed"
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert project.last_run("long_running")["status"] == "completed"


def test_cancel_from_another_process_deletes_the_step_runs_job(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    project = zenml_stack.project
    proc = project.start_pipeline("long_running", env={"LONG_STEP_SECONDS": "300"})
    try:
        run_id = _running_run(zenml_stack, api_client, "long_running")
        (step,) = project.last_run("long_running")["steps"]
        assert project.tool("cancel", step["id"]) == "None"
        assert jobs_of(api_client, zenml_stack.namespace, run_id) == []
        assert pods_of_run(api_client, zenml_stack.namespace, run_id) == []
        assert project.tool("status", step["id"]) == "stopped"
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The pipeline's own wait saw the Job go.
    assert proc.returncode != 0
    assert "deleted before it finished" in out, out


def _running_run(zenml_stack: ZenMLStack, api_client: Any, pipeline: str) -> str:
    """The id of the pipeline's new run once its step's pod runs."""
    core = k8s.CoreV1Api(api_client)
    earlier = {
        p.metadata.labels[LABEL_RUN_ID]
        for p in core.list_namespaced_pod(
            zenml_stack.namespace, label_selector=f"{LABEL_STEP_NAME}=long_step"
        ).items
    }
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pods = [
            p
            for p in core.list_namespaced_pod(
                zenml_stack.namespace, label_selector=f"{LABEL_STEP_NAME}=long_step"
            ).items
            if p.metadata.labels[LABEL_RUN_ID] not in earlier
        ]
        running = [
            p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]
        for pod in running:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.running is not None:
                return str(pod.metadata.labels[LABEL_RUN_ID])
        time.sleep(0.5)
    raise AssertionError(f"no running pod of {pipeline} within 180 s")
