"""Real pipelines on the production ZenML stack, run by ZenML, on the local cluster.

The stack is the README's, registered with ZenML's own command line (``examples/zenml/
server_stack.py``): ZenML's ``kubernetes`` orchestrator, its ``s3`` artifact store on the
object store, a ZenML server that is remote in ZenML's sense, and our ``kubernetes_job`` step
operator. ZenML's orchestrator pod and its step pods run on the cluster as the chart's pipeline
ServiceAccount (``pipeline.rbac.zenmlOrchestrator``): our operator submits the GPU steps from
inside ZenML's step pods with exactly the RBAC the chart grants. Everything is read back from
the server (statuses, logs, run metadata, artifacts) and from the cluster (Jobs, pods).

Needs the real node, the ZenML image on it and the stack services (``make cluster``, ``make
zenml-image``, ``make stack-services``; ``make test`` runs all three).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

zenml = pytest.importorskip("zenml")

from kubernetes import client as k8s  # noqa: E402

from examples.zenml import server_stack  # noqa: E402
from k8s_step_operator._job.keys import LABEL_RUN_ID, LABEL_STEP_NAME  # noqa: E402
from tests.zenml_integration.conftest import (  # noqa: E402
    REAL_NODE,
    ZENML_IMAGE,
    ChartInstall,
    ZenMLProject,
    chart_in_namespace,
    own_namespace,
    zenml_image_present,
)

pytestmark = pytest.mark.realnode

HERE = Path(__file__).resolve().parent
PIPELINES = HERE / "pipelines" / "prod_pipelines.py"
ZENML_ORCHESTRATOR = {"pipeline": {"rbac": {"zenmlOrchestrator": True}}}


@dataclass
class Prod:
    """The production stack of this module, and the ZenML client that uses it."""

    project: ZenMLProject
    namespace: str
    spec: server_stack.StackSpec
    services: server_stack.Services
    chart: ChartInstall
    api: Any

    def pipeline(self, name: str, *, timeout: float = 900, **env: str) -> Any:
        return self.project.run(
            [sys.executable, PIPELINES.name, name], timeout=timeout, env=env or None
        )

    def details(self, pipeline: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.project.tool("run", pipeline, timeout=300))
        return data

    def our_jobs(self, run_id: str, step: str | None = None) -> list[Any]:
        selector = f"{LABEL_RUN_ID}={run_id}" + (f",{LABEL_STEP_NAME}={step}" if step else "")
        batch = k8s.BatchV1Api(self.api)
        return list(batch.list_namespaced_job(self.namespace, label_selector=selector).items)

    def our_pods(self, run_id: str) -> list[Any]:
        core = k8s.CoreV1Api(self.api)
        selector = f"{LABEL_RUN_ID}={run_id}"
        return list(core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def all_job_names(self) -> set[str]:
        # Read as JSON: this kubernetes client (25.x, ZenML's) cannot read a Job whose
        # podFailurePolicy has a rule with onExitCodes alone (it wants onPodConditions too), which
        # the API allows and a step with fail_on_exit_codes has.
        resp = k8s.BatchV1Api(self.api).list_namespaced_job(self.namespace, _preload_content=False)
        return {j["metadata"]["name"] for j in json.loads(resp.data)["items"]}


def ok(done: Any) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return f"{done.stdout}\n{done.stderr}"


def output(done: Any) -> str:
    return f"{done.stdout}\n{done.stderr}"


def kube_context(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["current-context"])


def stack_state() -> Path:
    from tests.conftest import stack_info_path

    return stack_info_path()


@pytest.fixture(scope="module")
def prod(
    api_client: Any,
    kubeconfig_path: Path,
    helm_bin: str,
    stack_info: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prod]:
    from tests.conftest import _probe_realnode, unavailable

    reason = _probe_realnode()
    if reason:
        unavailable(reason)
    if not zenml_image_present(api_client):
        unavailable(f"{ZENML_IMAGE} is not on {REAL_NODE}: run `make zenml-image`")
    services = server_stack.local_services(str(kubeconfig_path), stack_state())
    root = tmp_path_factory.mktemp("prod")
    core = k8s.CoreV1Api(api_client)
    with own_namespace(api_client, "prod") as namespace:
        # ZenML's own pods run as root: the namespace admits the baseline profile (our Jobs
        # pass the restricted one, as everywhere).
        core.patch_namespace(
            namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
        )
        with chart_in_namespace(
            helm_bin, kubeconfig_path, api_client, namespace, root, values=ZENML_ORCHESTRATOR
        ) as chart:
            project = ZenMLProject(root=root)
            project.repo.mkdir()
            shutil.copy(PIPELINES, project.repo / PIPELINES.name)
            project.env = server_stack.client_env(services, project.config)
            project.env["KUBECONFIG"] = str(kubeconfig_path)
            ok(project.zenml("init"))
            tag = uuid.uuid4().hex[:6]
            spec = server_stack.local_spec(
                namespace,
                pipeline_account=chart.pipeline_account,
                step_account=chart.step_account,
                kube_context=kube_context(kubeconfig_path),
                prefix=f"tests/{tag}",
                stack=f"t-{tag}",
            )
            for args in server_stack.registration(services, spec):
                done = project.zenml(*args, timeout=300)
                if not server_stack.already_there(args, done):
                    ok(done)
            yield Prod(project, namespace, spec, services, chart, api_client)


def step(details: dict[str, Any], name: str, status: str | None = None) -> dict[str, Any]:
    found = [s for s in details["steps"] if s["name"] == name]
    if status is not None:
        found = [s for s in found if s["status"] == status]
    assert found, (name, status, [(s["name"], s["status"]) for s in details["steps"]])
    return found[-1]


def card(s: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = s["metadata"]["kubernetes_job"]
    return data


# -- success ---------------------------------------------------------------------------------


def test_cpu_gpu_and_retried_steps_complete_with_artifacts_and_metadata_in_the_server(
    prod: Prod,
) -> None:
    done = prod.pipeline("production")
    ok(done)
    run = prod.details("production")
    assert run["status"] == "completed"
    assert sorted((s["name"], s["status"]) for s in run["steps"]) == [
        ("evaluate", "completed"),
        ("flaky", "completed"),
        ("flaky", "retried"),
        ("load_data", "completed"),
        ("train", "completed"),
    ]
    # The artifacts went to the object store and come back from it.
    evaluate = step(run, "evaluate")
    (report,) = evaluate["outputs"].values()
    assert report["uri"].startswith(f"s3://{prod.services.bucket}/{prod.spec.prefix}/")
    assert report["value"] == repr("mean=5.5 accepted after 2 attempts (n=10)")
    (model,) = step(run, "train")["outputs"].values()
    assert model["value"] == repr({"mean": 5.5, "n": 10.0})

    # Our Jobs: the GPU step and both attempts of the retried one (a new Job each); the CPU
    # steps ran in ZenML's own step pods.
    jobs = prod.our_jobs(run["id"])
    assert sorted(j.metadata.labels[LABEL_STEP_NAME] for j in jobs) == ["flaky", "flaky", "train"]
    attempts = {s["id"] for s in run["steps"] if s["name"] == "flaky"}
    flaky_jobs = prod.our_jobs(run["id"], "flaky")
    assert {j.metadata.annotations["k8s-step-operator.io/step-run-id"] for j in flaky_jobs} == (
        attempts
    )
    (train_job,) = prod.our_jobs(run["id"], "train")
    pod = train_job.spec.template.spec
    assert pod.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.service_account_name == prod.chart.step_account
    assert {p.spec.node_name for p in prod.our_pods(run["id"])} == {REAL_NODE}
    # ZenML's orchestrator pod and step pods ran as the chart's pipeline account.
    zenml_pods = (
        k8s.CoreV1Api(prod.api)
        .list_namespaced_pod(prod.namespace, label_selector=f"run_id={run['id']}")
        .items
    )
    assert zenml_pods
    assert {p.spec.service_account_name for p in zenml_pods} == {prod.chart.pipeline_account}

    # The timeline and diagnosis of each of our steps, read back from the server.
    train = card(step(run, "train"))
    assert train["outcome"] == "succeeded"
    assert train["node"] == REAL_NODE
    assert train["gpus"] == 1 and train["gpu_resource"] == "nvidia.com/gpu"
    assert train["gpu_model"], train
    assert train["running_seconds"] > 0 and train["gpu_seconds"] == train["running_seconds"]
    assert train["starting_seconds"] > 0
    for key in ("queued_seconds", "scheduling_seconds", "starting_seconds", "running_seconds"):
        assert isinstance(train[key], float), key
    first = card(step(run, "flaky", "retried"))
    assert first["outcome"] == "failed"
    assert first["failure"] == "StepFailedError" and first["exit_code"] == 1
    assert card(step(run, "flaky", "completed"))["outcome"] == "succeeded"

    # What `zenml pipeline runs list` shows.
    listed = prod.project.zenml("pipeline", "runs", "list", "-c", "name,status", "-o", "tsv")
    assert f"{run['name']}\tcompleted" in ok(listed)


# -- failure ---------------------------------------------------------------------------------


def test_an_unschedulable_gpu_step_fails_the_run_within_60_s_with_the_schedulers_reason(
    prod: Prod,
) -> None:
    # ZenML's client reports a failed run of the kubernetes orchestrator but exits 0: the run's
    # status in the server is what counts.
    prod.pipeline("unschedulable")
    run = prod.details("unschedulable")
    assert run["status"] == "failed"
    too_big = step(run, "too_big")
    assert too_big["status"] == "failed"
    # From the step's start (the launcher's, in ZenML's step pod) to the run's failure.
    assert run["end"] - too_big["start"] < 60, (run["end"] - too_big["start"], run)
    logs = "\n".join(too_big["logs"])
    assert "Insufficient nvidia.com/gpu" in logs, logs[-3000:]
    assert card(too_big)["failure"] == "UnschedulableError"
    assert "Insufficient nvidia.com/gpu" in (too_big["message"] or "")
    assert prod.our_jobs(run["id"]) == []


def test_an_oom_killed_step_and_a_deadline_are_reported_as_such(prod: Prod) -> None:
    prod.pipeline("oom")
    run = prod.details("oom")
    hog = step(run, "hog_memory")
    assert run["status"] == "failed" and hog["status"] == "failed"
    assert "OOM" in (hog["message"] or ""), hog
    assert (card(hog)["failure"], card(hog)["exit_code"]) == ("OOMKilledError", 137)

    prod.pipeline("deadline")
    run = prod.details("deadline")
    overrun = step(run, "overrun")
    assert run["status"] == "failed" and overrun["status"] == "failed"
    assert card(overrun)["failure"] == "DeadlineExceededError"
    assert "deadline" in (overrun["message"] or "").lower(), overrun


# -- stop ------------------------------------------------------------------------------------


def running_gpu_step(prod: Prod, proc: Any, timeout: float = 300) -> tuple[str, Any]:
    """The run id and our Job of the long step, once its container runs."""
    core = k8s.CoreV1Api(prod.api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-5000:]
        for pod in core.list_namespaced_pod(
            prod.namespace, label_selector=f"{LABEL_STEP_NAME}=long_step"
        ).items:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.running and not pod.metadata.deletion_timestamp:
                run_id = pod.metadata.labels[LABEL_RUN_ID]
                (job,) = prod.our_jobs(run_id, "long_step")
                return run_id, job
        time.sleep(1)
    raise AssertionError(f"no running long_step pod within {timeout:.0f} s")


def test_stopping_the_run_deletes_the_running_gpu_steps_job_and_pods_within_seconds(
    prod: Prod,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, PIPELINES.name, "long_running"],
        cwd=prod.project.repo,
        env=prod.project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id, _ = running_gpu_step(prod, proc)
        stopped = time.monotonic()
        ok(prod.project.zenml("pipeline", "runs", "stop", run_id, "-y"))
        while prod.our_jobs(run_id) or prod.our_pods(run_id):
            assert time.monotonic() - stopped < 30, "our Job or its pods outlived the stop"
            time.sleep(0.2)
        gone_after = time.monotonic() - stopped
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
    assert gone_after < 15, gone_after
    run = prod.details("long_running")
    assert run["status"] in ("stopped", "failed"), run["status"]


# -- dynamic ---------------------------------------------------------------------------------


def test_a_dynamic_pipeline_runs_through_submit_get_status_and_cleanup(prod: Prod) -> None:
    ok(prod.pipeline("dynamic"))
    run = prod.details("dynamic")
    assert run["status"] == "completed"
    names = sorted(s["name"] for s in run["steps"])
    assert len(names) == 3 and names.count("add") == 1, names
    (result,) = step(run, "add")["outputs"].values()
    assert result["value"] == "25"
    jobs = prod.our_jobs(run["id"])
    assert len(jobs) == 3
    # Followed by the polling path's own watch: the metadata is there too.
    for s in run["steps"]:
        assert card(s)["outcome"] == "succeeded", s


# -- a stack that cannot work is refused before any Job is created --------------------------


def refused(prod: Prod, variant: dict[str, Any]) -> str:
    """Activate a variant of the stack (components changed as given), run a pipeline, return
    ZenML's refusal, and check that nothing reached the cluster."""
    before = prod.all_job_names()
    name = prod.project.tool("variant", json.dumps({"base": prod.spec.stack, **variant}))
    try:
        done = prod.pipeline("production", timeout=300)
    finally:
        ok(prod.project.zenml("stack", "set", prod.spec.stack))
    assert done.returncode != 0, output(done)[-3000:]
    assert prod.all_job_names() == before, "a Job was created"
    assert name
    return output(done)


def test_a_local_artifact_store_with_the_remote_orchestrator_is_refused(prod: Prod) -> None:
    text = refused(prod, {"artifact_store": "default"})
    assert "'default' artifact_store is a local stack component" in " ".join(text.split())


def test_an_object_store_the_pods_cannot_reach_is_refused(prod: Prod) -> None:
    s3_port = prod.services.s3_endpoint.rsplit(":", 1)[1]
    text = " ".join(
        refused(
            prod,
            {
                "s3_endpoint": f"http://127.0.0.1:{s3_port}",
                "secret": prod.spec.name("s3-credentials"),
            },
        ).split()
    )
    assert f"step operator '{prod.spec.step_operator}'" in text
    assert f"endpoint http://127.0.0.1:{s3_port} is this machine's loopback address" in text


def test_a_server_url_the_pods_cannot_resolve_is_refused(prod: Prod) -> None:
    url = "http://zenml.no-such-namespace.svc.cluster.local:8080"
    text = " ".join(refused(prod, {"orchestrator_env": {"ZENML_STORE_URL": url}}).split())
    assert f"step operator '{prod.spec.step_operator}'" in text
    assert "Service zenml in namespace no-such-namespace" in text
    assert "cannot resolve it" in text


def test_a_service_account_without_the_rbac_is_refused(prod: Prod) -> None:
    text = " ".join(refused(prod, {"step_pod_service_account_name": "default"}).split())
    assert f"step operator '{prod.spec.step_operator}'" in text
    assert f"the ServiceAccount {prod.namespace}/default of ZenML's step pods may not" in text
    assert "create jobs.batch" in text and "--step_pod_service_account_name=" in text


# -- a drop-in for ZenML's own kubernetes step operator -------------------------------------

PORTABLE = HERE / "pipelines" / "portable_pipeline.py"


def _plain(obj: Any) -> Any:
    return k8s.ApiClient().sanitize_for_serialization(obj)


def test_a_pipeline_written_for_zenmls_kubernetes_operator_runs_on_ours_with_the_same_job(
    prod: Prod,
) -> None:
    """The same pipeline on both flavors, only the step operator component changed."""
    shutil.copy(PORTABLE, prod.project.repo / PORTABLE.name)
    theirs_stack, commands = server_stack.zenmls_operator(prod.spec)
    for args in commands:
        ok(prod.project.zenml(*args, timeout=300))
    env = {"STEP_ACCOUNT": prod.chart.step_account}
    runs: dict[str, dict[str, Any]] = {}
    try:
        for stack in (theirs_stack, prod.spec.stack):
            ok(prod.project.zenml("stack", "set", stack))
            ok(prod.project.run([sys.executable, PORTABLE.name], timeout=900, env=env))
            runs[stack] = prod.details("portable")
            assert runs[stack]["status"] == "completed", runs[stack]
    finally:
        ok(prod.project.zenml("stack", "set", prod.spec.stack))
    batch = k8s.BatchV1Api(prod.api)
    # ZenML's operator labels its Job with the step run's id.
    theirs_step = step(runs[theirs_stack], "train")["id"]
    (theirs,) = batch.list_namespaced_job(
        prod.namespace, label_selector=f"step_run_id={theirs_step}"
    ).items
    (ours,) = prod.our_jobs(runs[prod.spec.stack]["id"], "train")
    a, b = _plain(theirs), _plain(ours)
    pa, pb = a["spec"]["template"]["spec"], b["spec"]["template"]["spec"]
    (ca,), (cb,) = pa["containers"], pb["containers"]
    assert pb["nodeSelector"] == pa["nodeSelector"]
    assert pb["affinity"] == pa["affinity"]
    assert all(t in pb["tolerations"] for t in pa["tolerations"])
    assert cb["resources"] == ca["resources"]
    assert all(v in pb["volumes"] for v in pa["volumes"])
    assert all(m in cb["volumeMounts"] for m in ca["volumeMounts"])
    assert pb["serviceAccountName"] == pa["serviceAccountName"] == prod.chart.step_account
    labels_a, labels_b = a["spec"]["template"]["metadata"], b["spec"]["template"]["metadata"]
    assert labels_b["labels"]["team"] == labels_a["labels"]["team"] == "ml"
    assert labels_b["annotations"]["owner"] == labels_a["annotations"]["owner"]
    env_a = {e["name"]: e.get("value") for e in ca["env"]}
    env_b = {e["name"]: e.get("value") for e in cb["env"]}
    assert env_a["EPOCHS"] == env_b["EPOCHS"] == "3"
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds"):
        assert b["spec"][key] == a["spec"][key], key
    # Ours adds what it always does: the restricted profile, and no privilege to begin with.
    assert cb["securityContext"]["allowPrivilegeEscalation"] is False


# -- faults ------------------------------------------------------------------------------------


def restart_service(name: str) -> None:
    """Stop one of the stack services and start it again (``e2e/stack.py``)."""
    import importlib.util

    from tests.conftest import load_cluster_module

    load_cluster_module()
    sys.path.insert(0, str(HERE.parents[1] / "e2e"))
    sys.path.insert(0, str(HERE.parents[1] / "e2e" / "realnode"))
    spec = importlib.util.spec_from_file_location(
        "k8sso_e2e_stack", HERE.parents[1] / "e2e" / "stack.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    st = mod.cluster.State.load()
    assert mod.stop(st, name), f"{name} was not running"
    done = subprocess.run(
        [sys.executable, str(HERE.parents[1] / "e2e" / "stack.py"), "up", "--only", name,
         "--zenml-python", sys.executable],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("service", ["zenml-server", "seaweedfs"])
def test_a_restart_of_the_server_or_the_object_store_during_a_gpu_step_loses_nothing(
    prod: Prod, service: str
) -> None:
    env = {**prod.project.env, "LONG_STEP_SECONDS": "30"}
    proc = subprocess.Popen(
        [sys.executable, PIPELINES.name, "long_running"],
        cwd=prod.project.repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run_id, _ = running_gpu_step(prod, proc)
        restart_service(service)
        proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run = prod.details("long_running")
    assert run["id"] == run_id
    print(f"{service} restarted during the GPU step: the run {run['status']}")
    long = step(run, "long_step")
    if run["status"] == "completed":
        (result,) = long["outputs"].values()
        assert result["value"] == repr("slept 30 s")
        assert card(long)["outcome"] == "succeeded"
    else:
        # Failed with a reason that says what happened, never a hang.
        assert run["status"] == "failed", run["status"]
        assert long["message"], long
    # Nothing of ours is left running.
    for pod in prod.our_pods(run_id):
        assert pod.status.phase in ("Succeeded", "Failed"), (pod.metadata.name, pod.status.phase)
    for job in prod.our_jobs(run_id):
        assert job.status.active in (None, 0), job.metadata.name
