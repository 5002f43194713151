"""launch() on the real API server, job controller and scheduler, as the chart's ServiceAccount.

Pods run on simulated nodes; pod annotations choose how long they run and how they end. The
operator authenticates with the pipeline ServiceAccount the Helm chart creates (least privilege),
never as admin: every path here works with those rights alone.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from k8s_step_operator import (
    AdmissionRejectedError,
    DeadlineExceededError,
    ExecutionStatus,
    ForbiddenError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    ResourceSettings,
    StepConfiguration,
    StepFailedError,
    StepRunInfo,
    UnschedulableError,
)
from k8s_step_operator._job.naming import job_name
from k8s_step_operator._kube.access import KubeApi
from k8s_step_operator._kube.client import load_api_client
from k8s_step_operator._runner.step_run import NodeView
from tests.cluster.conftest import write_kubeconfig
from tests.conftest import wait_until

pytestmark = pytest.mark.cluster

KEY = "step_operator.kubernetes_job"
DURATION = "sim.k8s-step-operator.io/run-duration"
EXIT_CODE = "sim.k8s-step-operator.io/exit-code"
CHILD = Path(__file__).with_name("launch_child.py")


def step_info(
    step: str,
    *,
    run: str | None = None,
    gpus: int = 0,
    duration: str = "200ms",
    step_run_id: str | None = None,
    **settings: Any,
) -> StepRunInfo:
    annotations = {DURATION: duration, **settings.pop("pod_annotations", {})}
    return StepRunInfo(
        step_run_id=step_run_id or str(uuid.uuid4()),
        run_id=run or f"run-{uuid.uuid4().hex[:8]}",
        run_name="test-run",
        pipeline_step_name=step,
        config=StepConfiguration(
            name=step,
            resource_settings=ResourceSettings(gpu_count=gpus),
            settings={KEY: {"pod_annotations": annotations, **settings}},
        ),
    )


@pytest.fixture
def pipeline_kubeconfig(operator_sa: Any, api_client: k8s.ApiClient, tmp_path: Path) -> Path:
    """A kubeconfig holding only the chart's pipeline ServiceAccount token."""
    return write_kubeconfig(
        tmp_path / "pipeline.kubeconfig", api_client, operator_sa.token, operator_sa.namespace
    )


@pytest.fixture
def make_operator(
    pipeline_kubeconfig: Path, operator_sa: Any
) -> Iterator[Callable[..., KubernetesJobStepOperator]]:
    """Operators for the test, closed before its ServiceAccount and namespace go."""
    made: list[KubernetesJobStepOperator] = []

    def make(**config: Any) -> KubernetesJobStepOperator:
        operator = KubernetesJobStepOperator(
            "k8s",
            config=KubernetesJobStepOperatorConfig(
                kubeconfig_path=str(pipeline_kubeconfig),
                namespace=operator_sa.namespace,
                image="localhost/step:1",
                image_pull_policy="IfNotPresent",
                service_account_name=operator_sa.step_service_account,
                **config,
            ),
        )
        made.append(operator)
        return operator

    yield make
    for operator in made:
        operator.close()


@pytest.fixture
def operator(make_operator: Callable[..., KubernetesJobStepOperator]) -> KubernetesJobStepOperator:
    return make_operator()


def jobs_in(api_client: k8s.ApiClient, namespace: str) -> list[Any]:
    return list(k8s.BatchV1Api(api_client).list_namespaced_job(namespace).items)


def pods_of(api_client: k8s.ApiClient, namespace: str, job: str) -> list[Any]:
    return list(
        k8s.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
        .items
    )


def pod_running(api_client: k8s.ApiClient, namespace: str, job: str) -> bool:
    return any(p.status.phase == "Running" for p in pods_of(api_client, namespace, job))


class Launch:
    """``launch`` in a background thread, keeping what it returned or raised."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                fn()
            except BaseException as e:
                self.error = e
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 120) -> None:
        assert self.done.wait(timeout), "launch did not return"
        if self.error is not None:
            raise self.error


# -- outcomes ---------------------------------------------------------------------------------


def test_success_streams_logs_to_the_caller(
    operator: KubernetesJobStepOperator,
    api_client: k8s.ApiClient,
    gpu_pool: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = step_info("train", gpus=2, gpu_type=gpu_pool.node_selector.get("nvidia.com/gpu.product"))
    with caplog.at_level(logging.INFO):
        operator.launch(info, ["python", "-m", "train"], {"EPOCHS": "3"})
    name = job_name(info.run_id, "train", info.step_run_id)
    job = k8s.BatchV1Api(api_client).read_namespaced_job(name, operator.config.namespace)
    conds = {c.type: c.status for c in job.status.conditions or []}
    assert conds.get("SuccessCriteriaMet") == "True" or conds.get("Complete") == "True"
    (pod,) = pods_of(api_client, operator.config.namespace, name)
    assert pod.spec.node_name in gpu_pool.nodes
    step_lines = [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator.step"]
    assert step_lines, "the step's output did not reach the caller's logger"
    assert len(step_lines) == len(set(step_lines)), "lines delivered twice"
    phases = " ".join(r.getMessage() for r in caplog.records if r.name == "k8s_step_operator")
    assert "submitted" in phases and "succeeded" in phases


@pytest.mark.parametrize("stream_logs", [True, False], ids=["streamed", "not-streamed"])
def test_failure_reports_exit_code(operator: KubernetesJobStepOperator, stream_logs: bool) -> None:
    info = step_info("evaluate", pod_annotations={EXIT_CODE: "42"}, stream_logs=stream_logs)
    with pytest.raises(StepFailedError) as raised:
        operator.launch(info, ["python", "-m", "evaluate"], {})
    err = raised.value
    assert err.exit_code == 42
    assert err.job == job_name(info.run_id, "evaluate", info.step_run_id)
    assert err.pod.startswith(err.job) and err.container
    assert "exit code 42" in str(err)
    assert err.log_tail, "the failure carries no log tail"


def test_never_fitting_gpu_request_fails_at_once(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, gpu_pool: Any
) -> None:
    info = step_info("huge", gpus=gpu_pool.per_node + 1, pending_timeout=300)
    start = time.monotonic()
    with pytest.raises(UnschedulableError) as raised:
        operator.launch(info, ["true"], {})
    elapsed = time.monotonic() - start
    assert f"Insufficient {gpu_pool.resource}" in str(raised.value)
    assert "no node could ever fit" in str(raised.value)
    assert elapsed < 2, "failed by the pending timeout instead of the preflight check"
    # Nothing is left holding (or waiting for) GPUs.
    assert jobs_in(api_client, operator.config.namespace) == []


def test_busy_capacity_fails_after_pending_timeout(
    make_operator: Callable[..., KubernetesJobStepOperator],
    api_client: k8s.ApiClient,
    gpu_pool: Any,
    namespace: str,
) -> None:
    # Fill every node of the pool with a long-running Job (admin, another namespace).
    batch, core = k8s.BatchV1Api(api_client), k8s.CoreV1Api(api_client)
    for i, node in enumerate(gpu_pool.nodes):
        free = core.read_node(node).status.allocatable.get(gpu_pool.resource, "0")
        batch.create_namespaced_job(
            namespace,
            {
                "metadata": {"name": f"blocker-{i}"},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"annotations": {DURATION: "10m"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "nodeName": node,
                            "tolerations": [{"operator": "Exists"}],
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "localhost/step:1",
                                    "imagePullPolicy": "Never",
                                    "resources": {"limits": {gpu_pool.resource: free}},
                                }
                            ],
                        },
                    },
                },
            },
        )
    wait_until(
        "blockers to hold every GPU of the pool",
        lambda: (
            sum(bool(p.spec.node_name) for p in core.list_namespaced_pod(namespace).items)
            == len(gpu_pool.nodes)
        ),
    )
    operator = make_operator()
    info = step_info(
        "waits",
        gpus=1,
        pending_timeout=3,
        gpu_type=gpu_pool.node_selector.get("nvidia.com/gpu.product"),
    )
    start = time.monotonic()
    with pytest.raises(UnschedulableError) as raised:
        operator.launch(info, ["true"], {})
    assert time.monotonic() - start >= 3
    assert "pending timeout" in str(raised.value)
    assert f"Insufficient {gpu_pool.resource}" in raised.value.breakdown
    left = {j.metadata.name for j in jobs_in(api_client, operator.config.namespace)}
    assert job_name(info.run_id, "waits", info.step_run_id) not in left


def test_selector_that_no_node_matches(operator: KubernetesJobStepOperator) -> None:
    info = step_info("nowhere", node_selector={"example.com/zone": "atlantis"}, pending_timeout=300)
    with pytest.raises(UnschedulableError) as raised:
        operator.launch(info, ["true"], {})
    assert "node affinity/selector" in str(raised.value)


def test_gpu_quota_of_zero_is_reported(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, gpu_pool: Any
) -> None:
    ns = operator.config.namespace
    k8s.CoreV1Api(api_client).create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}}
    )
    info = step_info("quota", gpus=1)
    with pytest.raises(AdmissionRejectedError) as raised:
        operator.launch(info, ["true"], {})
    assert "exceeded quota" in str(raised.value)
    assert jobs_in(api_client, ns) == []


# -- the non-blocking form ----------------------------------------------------------------------


def test_submit_status_wait(operator: KubernetesJobStepOperator) -> None:
    info = step_info("async", duration="2s")
    operator.submit(info, ["true"], {})
    status = operator.get_status(info)
    assert status in {
        ExecutionStatus.INITIALIZING,
        ExecutionStatus.PROVISIONING,
        ExecutionStatus.RUNNING,
    }
    operator.wait(info)
    assert operator.get_status(info) is ExecutionStatus.COMPLETED


def test_cancel_from_the_non_blocking_form(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient
) -> None:
    info = step_info("async-cancel", duration="10m")
    operator.submit(info, ["true"], {})
    name = job_name(info.run_id, "async-cancel", info.step_run_id)
    wait_until("pod running", lambda: pod_running(api_client, operator.config.namespace, name))
    operator.cancel(info)
    assert pods_of(api_client, operator.config.namespace, name) == []
    assert operator.get_status(info) is ExecutionStatus.STOPPED


# -- interrupted and restarted callers ---------------------------------------------------------


def child(
    kubeconfig: Path, namespace: str, run: str, step: str, duration: str, account: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(kubeconfig), namespace, run, step, duration, account],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_deletes_job_and_pods(
    sig: signal.Signals, pipeline_kubeconfig: Path, operator_sa: Any, api_client: k8s.ApiClient
) -> None:
    ns, run = operator_sa.namespace, f"run-{uuid.uuid4().hex[:8]}"
    proc = child(pipeline_kubeconfig, ns, run, "long", "10m", operator_sa.step_service_account)
    name = job_name(run, "long", f"{run}-long")
    try:
        wait_until("the step to run", lambda: pod_running(api_client, ns, name))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert proc.returncode != 0
    assert "STEP DONE" not in out
    assert "deleting Job" in err
    assert jobs_in(api_client, ns) == []
    assert pods_of(api_client, ns, name) == []


def test_restarted_caller_reattaches(
    operator: KubernetesJobStepOperator,
    pipeline_kubeconfig: Path,
    operator_sa: Any,
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ns, run = operator_sa.namespace, f"run-{uuid.uuid4().hex[:8]}"
    proc = child(pipeline_kubeconfig, ns, run, "resume", "6s", operator_sa.step_service_account)
    name = job_name(run, "resume", f"{run}-resume")
    try:
        wait_until("the step to run", lambda: pod_running(api_client, ns, name))
        proc.kill()  # no chance to clean up, as when a node or a scheduler kills the caller
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    uid = k8s.BatchV1Api(api_client).read_namespaced_job(name, ns).metadata.uid
    info = step_info("resume", run=run, duration="6s", step_run_id=f"{run}-resume")
    with caplog.at_level(logging.INFO):
        operator.launch(info, ["sleep", "3600"], {})
    assert "reattached" in caplog.text
    (job,) = jobs_in(api_client, ns)
    assert job.metadata.uid == uid
    assert len(pods_of(api_client, ns, name)) == 1


# -- a control plane that misbehaves -------------------------------------------------------------


def test_apiserver_restart_mid_wait(
    operator: KubernetesJobStepOperator,
    local_cluster: Any,
    api_client: k8s.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Long enough that the pod still runs when the lines after the restart are written, even
    # when the restart takes many seconds on a loaded machine: lines written after a container
    # has exited are not something a kubelet would serve.
    info = step_info("survivor", duration="45s", pod_annotations={EXIT_CODE: "3"})
    ns, name = operator.config.namespace, job_name(info.run_id, "survivor", info.step_run_id)
    with caplog.at_level(logging.INFO):
        launch = Launch(lambda: operator.launch(info, ["true"], {}))
        wait_until("the step to run", lambda: pod_running(api_client, ns, name))
        (pod,) = pods_of(api_client, ns, name)
        local_cluster.write_pod_log(ns, pod.metadata.name, [f"line {i}" for i in range(1, 6)])
        time.sleep(1)
        # The watches and the log stream are cut; the step goes on without the caller seeing it.
        local_cluster.restart("kube-apiserver")
        local_cluster.write_pod_log(ns, pod.metadata.name, [f"line {i}" for i in range(6, 11)])
        assert pod_running(api_client, ns, name), "the pod ended before the test wrote to it"
        with pytest.raises(StepFailedError) as raised:
            launch.result(timeout=120)
    assert raised.value.exit_code == 3
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "k8s_step_operator.step" and r.getMessage().startswith("line ")
    ]
    assert lines == [f"line {i}" for i in range(1, 11)], "lines lost or repeated across the cut"


@pytest.mark.parametrize(
    "components", [("kube-apiserver", "kube-scheduler", "kube-controller-manager")]
)
def test_each_control_plane_component_restarts_healthy_while_steps_run(
    operator: KubernetesJobStepOperator,
    local_cluster: Any,
    api_client: k8s.ApiClient,
    components: tuple[str, ...],
) -> None:
    """``cluster.py restart`` (what a user types) ends with each component healthy, every time,
    while steps are running through it; the steps still succeed."""
    infos = [step_info(f"through-{i}", duration="45s") for i in range(2)]
    launches = [Launch(lambda info=info: operator.launch(info, ["true"], {})) for info in infos]
    ns = operator.config.namespace
    for info in infos:
        name = job_name(info.run_id, info.pipeline_step_name, info.step_run_id)
        # A busy cluster (a benchmark beside the suite) may take a while to start them.
        wait_until("the step to run", lambda name=name: pod_running(api_client, ns, name), 180)
    script = Path(__file__).resolve().parents[2] / "e2e" / "cluster.py"
    for component in components:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(script), "restart", component],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"restart {component}: {done.stdout}{done.stderr}"
        assert local_cluster.is_healthy(component), f"{component} not healthy after restart"
        assert "survived" not in done.stderr
        logging.getLogger(__name__).info(
            "%s restarted in %.1fs", component, time.monotonic() - started
        )
    for launch in launches:
        launch.result(timeout=180)
    assert all(local_cluster.is_healthy(c) for c in components)


class ExpiringApi(KubeApi):
    """The real API access, except that each kind's next watch resumes from a version long gone.

    The API server answers 410 Gone, as after a long outage; the watcher must re-list.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        super().__init__(api_client)
        self.expire: set[str] = set()
        self.streams: list[Any] = []
        self.lists: list[str] = []
        self.gone: list[str] = []

    def list_objects(
        self, kind: Any, namespace: str, label_selector: str | None, **page: Any
    ) -> Any:
        self.lists.append(kind)
        return super().list_objects(kind, namespace, label_selector, **page)

    def watch(self, kind: Any, namespace: str, *args: Any, **kwargs: Any) -> Any:
        if kind in self.expire:
            self.expire.discard(kind)
            self.gone.append(kind)
            args = (args[0], "1", *args[2:])
        stream = super().watch(kind, namespace, *args, **kwargs)
        self.streams.append(stream)
        return stream

    def expire_all(self) -> None:
        self.expire = {"jobs", "pods"}
        for stream in self.streams:
            stream.close()


def test_watch_expired_410_is_recovered(
    operator: KubernetesJobStepOperator, pipeline_kubeconfig: Path, api_client: k8s.ApiClient
) -> None:
    access = ExpiringApi(load_api_client(str(pipeline_kubeconfig)))
    operator._access, operator._nodes = access, NodeView(access)
    info = step_info("expired", duration="6s")
    name = job_name(info.run_id, "expired", info.step_run_id)
    ns = operator.config.namespace
    launch = Launch(lambda: operator.launch(info, ["true"], {}))
    wait_until("the step to run", lambda: pod_running(api_client, ns, name))
    lists = len(access.lists)
    access.expire_all()
    launch.result(timeout=60)
    assert set(access.gone) == {"jobs", "pods"}
    # The server answers an expired version with 410 (an error, or an ERROR event); the
    # watcher re-lists what it expired.
    assert len(access.lists) > lists, "the watches were not restarted through a 410"
    operator.close()


def test_queued_job_is_reported_and_bounded(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Without a Kueue controller nobody admits the Job: it stays suspended, as in a full queue.
    info = step_info("waits-in-queue", gpus=1, queue_name="gpu-queue", queue_timeout=2)
    with caplog.at_level(logging.INFO), pytest.raises(DeadlineExceededError) as raised:
        operator.launch(info, ["true"], {})
    assert "still queued" in str(raised.value) and "gpu-queue" in str(raised.value)
    assert "queued in LocalQueue gpu-queue" in caplog.text
    left = {j.metadata.name for j in jobs_in(api_client, operator.config.namespace)}
    assert job_name(info.run_id, "waits-in-queue", info.step_run_id) not in left


def test_missing_watch_permission_fails_fast_and_cleans_up(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    # An account that may create Jobs but not watch pods: the step must not wait blind.
    rbac, core = k8s.RbacAuthorizationV1Api(api_client), k8s.CoreV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "half"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "half"},
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "resources": ["jobs"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "half"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "half"},
            "subjects": [{"kind": "ServiceAccount", "name": "half", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "half", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    kubeconfig = write_kubeconfig(tmp_path / "half", api_client, token, namespace)
    operator = KubernetesJobStepOperator(
        "k8s",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=str(kubeconfig), namespace=namespace, image="localhost/step:1"
        ),
    )
    info = step_info("blind", duration="10m")
    with operator, pytest.raises(ForbiddenError) as raised:
        operator.launch(info, ["true"], {})
    assert "pods" in str(raised.value)
    assert jobs_in(api_client, namespace) == []
