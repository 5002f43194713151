"""Steps on several nodes (``num_nodes``) on the real API server, Job controller and scheduler,
as the chart's pipeline ServiceAccount, without Kueue.

The ranks run on the simulated H100 pool (four nodes of 8 GPUs, two per block): each test picks
how long each rank runs and how it ends with the rank-suffixed simulation annotations
(``sim.k8s-step-operator.io/exit-code.rank-2``...). What is checked is what a user sees: the
Indexed Job and its headless Service, every rank's output with its rank, the failing rank named
at once with its exit code and the other ranks stopped, a gang the pool can never hold refused
at once, where the ranks landed, and nothing left after a cancel.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k8s_step_operator import (
    ConfigurationError,
    KubernetesJobStepOperator,
    KubernetesJobStepOperatorConfig,
    RanksPlaced,
    StepFailedError,
    UnschedulableError,
)
from k8s_step_operator._job.naming import job_name
from tests.cluster.conftest import write_kubeconfig
from tests.cluster.test_launch import Launch, child, jobs_in, pods_of, step_info
from tests.conftest import unavailable, wait_until

pytestmark = pytest.mark.cluster

SIM = "sim.k8s-step-operator.io/"
BLOCK = "k8s-step-operator.io/topology-block"
INDEX = "batch.kubernetes.io/job-completion-index"


def gang_info(step: str, ranks: int, pool: Any, *, run: str | None = None, **settings: Any) -> Any:
    """A step of ``ranks`` ranks of the pool's whole nodes (8 GPUs), placed on the pool."""
    annotations = settings.pop("pod_annotations", {})
    return step_info(
        step,
        run=run,
        gpus=pool.per_node,
        num_nodes=ranks,
        node_selector=dict(pool.node_selector),
        pod_annotations=annotations,
        **settings,
    )


def name_of(info: Any, ranks: int) -> str:
    return job_name(info.run_id, info.pipeline_step_name, info.step_run_id, ranks=ranks)


def services_in(api_client: k8s.ApiClient, namespace: str) -> list[Any]:
    return list(k8s.CoreV1Api(api_client).list_namespaced_service(namespace).items)


def node_labels(api_client: k8s.ApiClient, node: str) -> dict[str, str]:
    return dict(k8s.CoreV1Api(api_client).read_node(node).metadata.labels or {})


@pytest.fixture
def kubeconfig(operator_sa: Any, api_client: k8s.ApiClient, tmp_path: Path) -> Path:
    """A kubeconfig holding only the chart's pipeline ServiceAccount token."""
    return write_kubeconfig(
        tmp_path / "pipeline.kubeconfig", api_client, operator_sa.token, operator_sa.namespace
    )


@pytest.fixture
def operator(kubeconfig: Path, operator_sa: Any) -> Iterator[KubernetesJobStepOperator]:
    """An operator acting as the chart's pipeline ServiceAccount, closed after the test."""
    made = KubernetesJobStepOperator(
        "k8s",
        config=KubernetesJobStepOperatorConfig(
            kubeconfig_path=str(kubeconfig),
            namespace=operator_sa.namespace,
            image="localhost/step:1",
            image_pull_policy="IfNotPresent",
            service_account_name=operator_sa.step_service_account,
        ),
    )
    yield made
    made.close()


@pytest.fixture
def h100(gpu_pool: Any, api_client: k8s.ApiClient) -> Any:
    """The H100 pool, with the four nodes in two blocks these tests are written for."""
    if len(gpu_pool.nodes) < 4:
        unavailable(f"the h100 pool has {len(gpu_pool.nodes)} nodes; these tests need 4")
    if not all(BLOCK in node_labels(api_client, n) for n in gpu_pool.nodes):
        unavailable(f"the h100 nodes do not carry {BLOCK} (e2e/nodes.yaml)")
    return gpu_pool


def test_ranks_run_as_one_indexed_job_with_a_service_and_every_ranks_output(
    operator: KubernetesJobStepOperator,
    api_client: k8s.ApiClient,
    h100: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ns = operator.config.namespace
    info = gang_info("train", 2, h100, duration="1s")
    events: list[Any] = []
    operator.subscribe(events.append)
    with caplog.at_level(logging.INFO):
        operator.launch(info, ["torchrun", "train.py"], {})
    name = name_of(info, 2)
    job = k8s.BatchV1Api(api_client).read_namespaced_job(name, ns)
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == job.spec.parallelism == 2
    conds = {c.type: c.status for c in job.status.conditions or []}
    assert conds.get("SuccessCriteriaMet") == "True"
    # The headless Service names rank 0; the garbage collector will remove it with the Job.
    (service,) = services_in(api_client, ns)
    assert service.metadata.name == name
    assert service.spec.cluster_ip == "None"
    assert service.metadata.owner_references[0].uid == job.metadata.uid
    pods = pods_of(api_client, ns, name)
    assert sorted(p.spec.hostname for p in pods) == [f"{name}-0", f"{name}-1"]
    assert {p.spec.subdomain for p in pods} == {name}
    assert {p.spec.node_name for p in pods} <= set(h100.nodes)
    env = {e.name: e for e in pods[0].spec.containers[0].env}
    assert env["MASTER_ADDR"].value == f"{name}-0.{name}"
    assert env["WORLD_SIZE"].value == "16" and env["NPROC_PER_NODE"].value == "8"
    # Every rank's output, each line once, with its rank.
    lines = [r.getMessage() for r in caplog.records if r.name == "k8s_step_operator.step"]
    for rank in (0, 1):
        mine = [line for line in lines if line.startswith(f"[rank {rank}] ")]
        assert mine, lines
        assert len(mine) == len(set(mine)), "lines delivered twice"
    (placed,) = [e for e in events if isinstance(e, RanksPlaced)]
    assert set(placed.nodes) == {0, 1}


def test_one_failing_rank_fails_the_step_at_once_and_stops_the_others(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    ns = operator.config.namespace
    info = gang_info(
        "crash",
        4,
        h100,
        duration="10m",
        pod_annotations={f"{SIM}run-duration.rank-2": "4s", f"{SIM}exit-code.rank-2": "3"},
    )
    name = name_of(info, 4)
    with pytest.raises(StepFailedError) as raised:
        operator.launch(info, ["torchrun", "train.py"], {})
    returned = time.time()
    error = raised.value
    assert (error.rank, error.exit_code) == (2, 3)
    assert error.pod.startswith(f"{name}-2-")
    assert "rank 2 exited with code 3" in str(error)
    assert error.log_tail, "rank 2's last lines"
    # Reported within a second or two of the rank's exit, not after the others' ten minutes.
    pods = pods_of(api_client, ns, name)
    (failed,) = [p for p in pods if p.metadata.annotations[INDEX] == "2"]
    finished = failed.status.container_statuses[0].state.terminated.finished_at.timestamp()
    assert returned - finished < 3.0, returned - finished
    # The Job controller stops the other ranks: no GPU keeps running for a dead step.
    wait_until(
        "the other ranks to be gone",
        lambda: all(p.metadata.annotations[INDEX] == "2" for p in pods_of(api_client, ns, name)),
        timeout=40,
    )


def test_a_gang_larger_than_the_pool_fails_at_once_and_leaves_nothing(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    ns = operator.config.namespace
    info = gang_info("huge", len(h100.nodes) + 1, h100, duration="10m", pending_timeout=600)
    start = time.monotonic()
    with pytest.raises(UnschedulableError) as raised:
        operator.launch(info, ["torchrun", "train.py"], {})
    assert time.monotonic() - start < 60
    text = str(raised.value)
    assert f"the {len(h100.nodes) + 1} ranks can never all be placed at once" in text
    assert f"ask for at most {len(h100.nodes)} nodes" in text
    # How many ranks were bound when the error was raised depends on the scheduler's binding,
    # which runs beside its next attempt: the last bindings may not be written yet.
    counted = re.search(rf"(\d+) of {len(h100.nodes) + 1} ranks scheduled; rank \d+: ", text)
    assert counted, text
    assert int(counted.group(1)) <= len(h100.nodes), text
    wait_until("the Job, its pods and its Service to go", lambda: not jobs_in(api_client, ns))
    wait_until("the pods to go", lambda: not pods_of(api_client, ns, name_of(info, 5)))
    wait_until("the Service to go", lambda: not services_in(api_client, ns), timeout=60)


def test_a_gang_kept_from_a_busy_node_says_how_many_ranks_are_placed(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any, namespace: str
) -> None:
    """Without Kueue nothing places the ranks together: the step says how far it got."""
    blocker = _block_node(api_client, namespace, h100, h100.nodes[0])
    try:
        info = gang_info("partial", len(h100.nodes), h100, duration="10m", pending_timeout=5)
        with pytest.raises(UnschedulableError) as raised:
            operator.launch(info, ["torchrun", "train.py"], {})
        n = len(h100.nodes)
        assert f"{n - 1} of {n} ranks scheduled; rank " in str(raised.value)
        assert "Insufficient nvidia.com/gpu" in str(raised.value)
        assert "pending timeout" in str(raised.value)
    finally:
        k8s.BatchV1Api(api_client).delete_namespaced_job(
            blocker, namespace, propagation_policy="Background"
        )


def _block_node(api_client: k8s.ApiClient, namespace: str, pool: Any, node: str) -> str:
    """Hold every GPU of ``node`` with a long Job (as admin); returns the Job's name."""
    name = f"blocker-{uuid.uuid4().hex[:6]}"
    k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {f"{SIM}run-duration": "10m"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeName": node,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {
                                "name": "c",
                                "image": "localhost/step:1",
                                "imagePullPolicy": "Never",
                                "resources": {"limits": {pool.resource: str(pool.per_node)}},
                            }
                        ],
                    },
                },
            },
        },
    )
    core = k8s.CoreV1Api(api_client)
    wait_until(
        f"the blocker to hold {node}",
        lambda: any(
            p.spec.node_name == node and p.status.phase == "Running"
            for p in core.list_namespaced_pod(
                namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
            ).items
        ),
    )
    return name


def test_a_topology_no_node_carries_is_refused_before_anything_is_created(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    info = gang_info("lost", 2, h100, topology="example.com/no-such-rack")
    with pytest.raises(ConfigurationError) as raised:
        operator.launch(info, ["torchrun", "train.py"], {})
    assert raised.value.field == "settings.topology"
    assert BLOCK in raised.value.accepted
    assert jobs_in(api_client, operator.config.namespace) == []


def test_ranks_with_a_topology_share_one_block_and_say_where(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    """Without Kueue, pod affinity among the ranks: the first one picks the block, the others
    join it (with Kueue, its topology-aware scheduling picks a block that fits them all:
    ``test_launch_ranks_kueue.py``)."""
    events: list[Any] = []
    operator.subscribe(events.append)
    info = gang_info("together", 2, h100, duration="1s", topology=BLOCK)
    operator.launch(info, ["torchrun", "train.py"], {})
    (placed,) = [e for e in events if isinstance(e, RanksPlaced)]
    blocks = {node_labels(api_client, n)[BLOCK] for n in placed.nodes.values()}
    assert len(blocks) == 1
    assert placed.level == BLOCK
    assert placed.text.endswith(f"all in {BLOCK}={blocks.pop()}")


def test_a_disrupted_rank_is_replaced_and_the_step_survives(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    ns = operator.config.namespace
    info = gang_info("evicted", 2, h100, duration="12s")
    name = name_of(info, 2)
    launch = Launch(lambda: operator.launch(info, ["torchrun", "train.py"], {}))
    evicted = _evict_rank(api_client, ns, name, 1)
    launch.result(120)  # succeeded: the evicted rank was replaced (ignore_disruptions)
    pods = pods_of(api_client, ns, name)
    assert evicted not in [p.metadata.name for p in pods]
    assert any(p.metadata.annotations[INDEX] == "1" for p in pods)


def test_a_disrupted_rank_fails_the_step_when_disruptions_count(
    operator: KubernetesJobStepOperator, api_client: k8s.ApiClient, h100: Any
) -> None:
    ns = operator.config.namespace
    info = gang_info("evicted-fails", 2, h100, duration="10m", ignore_disruptions=False)
    name = name_of(info, 2)
    launch = Launch(lambda: operator.launch(info, ["torchrun", "train.py"], {}))
    _evict_rank(api_client, ns, name, 1)
    with pytest.raises(StepFailedError) as raised:
        launch.result(120)
    assert raised.value.rank == 1
    assert "rank 1 was disrupted" in str(raised.value)


def _evict_rank(api_client: k8s.ApiClient, namespace: str, job: str, rank: int) -> str:
    core = k8s.CoreV1Api(api_client)

    def running_rank() -> str | None:
        for p in pods_of(api_client, namespace, job):
            if p.metadata.annotations.get(INDEX) == str(rank) and p.status.phase == "Running":
                return str(p.metadata.name)
        return None

    pod = wait_until(f"rank {rank} to run", running_rank)
    wait_until(
        "every rank to run",
        lambda: sum(p.status.phase == "Running" for p in pods_of(api_client, namespace, job)) > 1,
    )
    try:
        core.create_namespaced_pod_eviction(
            pod,
            namespace,
            k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pod, namespace=namespace)),
        )
    except ApiException as e:  # pragma: no cover - says why in the failure
        pytest.fail(f"evicting {pod}: {e.status} {e.body}")
    return pod


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_caller_leaves_no_rank_and_no_service(
    sig: signal.Signals,
    kubeconfig: Path,
    operator_sa: Any,
    api_client: k8s.ApiClient,
    h100: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns, run = operator_sa.namespace, f"run-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "K8SSO_CHILD_SETTINGS",
        _json({"num_nodes": 3, "gpu_count": 8, "node_selector": dict(h100.node_selector)}),
    )
    proc = child(kubeconfig, ns, run, "long", "10m", operator_sa.step_service_account)
    name = job_name(run, "long", f"{run}-long", ranks=3)
    try:
        wait_until(
            "the three ranks to run",
            lambda: sum(p.status.phase == "Running" for p in pods_of(api_client, ns, name)) == 3,
        )
        assert [s.metadata.name for s in services_in(api_client, ns)] == [name]
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
    wait_until(
        "the Service to go with its Job", lambda: not services_in(api_client, ns), timeout=60
    )


def test_a_restarted_caller_reattaches_to_the_gang(
    operator: KubernetesJobStepOperator,
    kubeconfig: Path,
    operator_sa: Any,
    api_client: k8s.ApiClient,
    h100: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ns, run = operator_sa.namespace, f"run-{uuid.uuid4().hex[:8]}"
    # A long step name: the name of a Job of several ranks is not the one-pod name.
    step = "resume-" + "x" * 50
    settings = {"num_nodes": 2, "gpu_count": 8, "node_selector": dict(h100.node_selector)}
    monkeypatch.setenv("K8SSO_CHILD_SETTINGS", _json(settings))
    proc = child(kubeconfig, ns, run, step, "8s", operator_sa.step_service_account)
    name = job_name(run, step, f"{run}-{step}", ranks=2)
    assert name != job_name(run, step, f"{run}-{step}")
    try:
        wait_until("the ranks to run", lambda: len(pods_of(api_client, ns, name)) == 2)
        proc.kill()  # no chance to clean up
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    uid = k8s.BatchV1Api(api_client).read_namespaced_job(name, ns).metadata.uid
    info = step_info(step, run=run, duration="8s", step_run_id=f"{run}-{step}", **settings)
    with caplog.at_level(logging.INFO):
        operator.launch(info, ["sleep", "3600"], {})
    assert "reattached" in caplog.text
    (job,) = jobs_in(api_client, ns)
    assert job.metadata.uid == uid
    assert len(services_in(api_client, ns)) == 1


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data)
