"""A step on several nodes followed from submission to its end against the in-memory API, on a
fake clock: its Service, its ranks' phases and logs, a failing rank, an impossible gang, a
topology no node carries, cancellation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from k8s_step_operator import (
    ConfigurationError,
    ForbiddenError,
    KubernetesJobStepOperatorSettings,
    LogLine,
    PhaseChanged,
    RanksPlaced,
    ResourceSettings,
    StepConfiguration,
    StepFailedError,
    StepRunInfo,
    UnschedulableError,
    build_job,
)
from k8s_step_operator._runner.events import Event, EventBus
from k8s_step_operator._runner.logs import LogFollower
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeClock, FakeKube, SyncWatchers

NS = "ml"
BLOCK = "k8s-step-operator.io/topology-block"
TAINT = [{"key": "nvidia.com/gpu", "effect": "NoSchedule", "value": "present"}]


def gpu_node(name: str, block: str = "") -> dict[str, Any]:
    labels = {"pool": "h100"} | ({BLOCK: block} if block else {})
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": TAINT},
        "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}},
    }


def make(
    ranks: int = 3, *, gpus: int = 8, nodes: int = 4, **overrides: Any
) -> tuple[FakeKube, StepRun, list[Event]]:
    clock = FakeClock()
    kube = FakeKube(clock)
    kube.nodes = [gpu_node(f"gpu-{i}", "block-a" if i < 2 else "block-b") for i in range(nodes)]
    kube.nodepools = []  # Karpenter runs, with no NodePool for these pods
    settings = KubernetesJobStepOperatorSettings(
        **{
            "namespace": NS,
            "image": "img:1",
            "stream_logs": False,
            "num_nodes": ranks,
            "node_selector": {"pool": "h100"},
            **overrides,
        }
    )
    info = StepRunInfo(
        step_run_id="sr-1",
        run_id="run-1",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=gpus)),
    )
    job = build_job(info, ["torchrun", "train.py"], {}, settings)
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    run = StepRun(
        kube,
        job,
        step=StepIdentity("run-1", "train", "sr-1"),
        settings=settings,
        clock=clock,
        watchers=SyncWatchers(kube),
        events=bus,
    )
    return kube, run, events


def running(kube: FakeKube, job: dict[str, Any], rank: int, node: str = "") -> None:
    kube.set_pod(
        job,
        rank=rank,
        spec={"nodeName": node or f"gpu-{rank}"},
        phase="Running",
        containerStatuses=[{"name": "step", "state": {"running": {}}}],
    )


def pending(kube: FakeKube, job: dict[str, Any], rank: int) -> None:
    message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    kube.set_pod(
        job,
        rank=rank,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    )


def ended(
    kube: FakeKube, job: dict[str, Any], rank: int, code: int, *, stopped: bool = False
) -> None:
    extra: dict[str, Any] = {}
    if stopped:
        extra["metadata"] = {"deletionTimestamp": "2026-01-01T00:00:30Z"}
    kube.set_pod(
        job,
        rank=rank,
        phase="Failed" if code else "Succeeded",
        containerStatuses=[
            {
                "name": "step",
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Error" if code else "Completed",
                        "finishedAt": f"2026-01-01T00:00:{20 + (10 if stopped else 0)}Z",
                    }
                },
            }
        ],
        **extra,
    )


def script(kube: FakeKube, *steps: tuple[float, Any]) -> None:
    def on_create(job: dict[str, Any]) -> None:
        for delay, action in steps:
            kube.clock.after(
                delay, lambda action=action: action(kube.job(NS, job["metadata"]["name"]))
            )

    kube.on_create = on_create


def test_the_ranks_service_is_created_with_the_job_and_the_gang_runs_to_success() -> None:
    kube, run, events = make(3)
    script(
        kube,
        *((1, lambda j, r=r: running(kube, j, r)) for r in range(3)),
        *((5, lambda j, r=r: ended(kube, j, r, 0)) for r in range(3)),
        (5, lambda j: kube.set_job_condition(j, "SuccessCriteriaMet", "CompletionsReached")),
    )
    run.run()
    job = kube.job(NS, run.name)
    assert job is not None and job["spec"]["completionMode"] == "Indexed"
    service = kube.store["services"][(NS, run.name)]
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert service["spec"]["selector"] == {
        "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]
    }
    # Created right after the Job, before anything else.
    creates = [c.method for c in kube.calls if c.method.startswith("create_")]
    assert creates == ["create_job", "create_service"]
    phases = [e.summary for e in events if isinstance(e, PhaseChanged)]
    assert "3 ranks running on gpu-0, gpu-1, gpu-2" in phases
    (placed,) = [e for e in events if isinstance(e, RanksPlaced)]
    assert dict(placed.nodes) == {0: "gpu-0", 1: "gpu-1", 2: "gpu-2"}
    assert placed.level == ""


def test_a_failing_rank_fails_the_step_naming_the_rank_its_code_and_its_last_lines() -> None:
    kube, run, _ = make(3)
    kube.logs[(NS, f"{run.name}-2-abcde", "step")] = ["epoch 1", "RuntimeError: NCCL timeout"]
    kube.logs[(NS, f"{run.name}-0-abcde", "step")] = ["rank 0 is fine"]
    script(
        kube,
        *((1, lambda j, r=r: running(kube, j, r)) for r in range(3)),
        (5, lambda j: ended(kube, j, 2, 3)),
        (5, lambda j: kube.set_job_condition(j, "FailureTarget", "BackoffLimitExceeded")),
        (5, lambda j: ended(kube, j, 0, 143, stopped=True)),
        (5, lambda j: ended(kube, j, 1, 143, stopped=True)),
    )
    started = kube.clock.t
    with pytest.raises(StepFailedError) as raised:
        run.run()
    error = raised.value
    assert (error.rank, error.exit_code) == (2, 3)
    assert error.pod == f"{run.name}-2-abcde"
    assert error.log_tail == ["epoch 1", "RuntimeError: NCCL timeout"]
    assert "rank 2 exited with code 3" in str(error)
    # At the Job's verdict, not after a wait for the other ranks.
    assert kube.clock.t - started == pytest.approx(5, abs=1.01)


def test_a_refused_service_deletes_the_job_again() -> None:
    kube, run, _ = make(2)
    kube.fail("create_service", ForbiddenError("services is forbidden", status=403))
    with pytest.raises(ForbiddenError):
        run.run()
    assert kube.count("create_job") == 1
    assert kube.count("delete_job") == 1
    assert kube.job(NS, run.name) is None


def test_a_topology_no_node_carries_is_refused_before_anything_is_created() -> None:
    kube, run, _ = make(2, topology="example.com/rack")
    with pytest.raises(ConfigurationError) as raised:
        run.run()
    assert raised.value.field == "settings.topology"
    assert BLOCK in raised.value.accepted  # what the nodes do carry
    assert kube.count("create_job") == 0
    assert not kube.store["services"]


def test_a_gang_larger_than_the_nodes_fails_at_once_and_is_deleted() -> None:
    kube, run, _ = make(5, nodes=4)
    script(
        kube,
        *((1, lambda j, r=r: running(kube, j, r)) for r in range(4)),
        (1, lambda j: pending(kube, j, 4)),
    )
    started = kube.clock.t
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    text = str(raised.value)
    assert "the 5 ranks can never all be placed at once" in text
    assert "settings.num_nodes 5" in text and "at most 4 nodes" in text
    assert raised.value.rank == 4
    assert kube.clock.t - started < 5
    assert kube.job(NS, run.name) is None
    assert not kube.store["services"]  # gone with the Job


def test_a_required_topology_counts_one_domain_only() -> None:
    kube, run, _ = make(3, topology=BLOCK, nodes=4)  # two nodes per block
    script(
        kube,
        (1, lambda j: running(kube, j, 0)),
        (1, lambda j: running(kube, j, 1)),
        (1, lambda j: pending(kube, j, 2)),
    )
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert f"the largest domain ({BLOCK}=block-b) could hold 2 ranks at most" in str(raised.value)


def test_a_gang_that_fits_the_nodes_waits_for_its_pending_timeout() -> None:
    kube, run, _ = make(3, nodes=4, pending_timeout=30)
    script(
        kube,
        (1, lambda j: running(kube, j, 0)),
        (1, lambda j: running(kube, j, 1)),
        (1, lambda j: pending(kube, j, 2)),
    )
    started = kube.clock.t
    with pytest.raises(UnschedulableError) as raised:
        run.run()
    assert "pending timeout" in str(raised.value)
    assert "2 of 3 ranks scheduled" in str(raised.value)
    assert kube.clock.t - started >= 30


def test_ctrl_c_deletes_the_gang_and_its_service() -> None:
    kube, run, _ = make(3)

    def interrupt(_: Any) -> None:
        raise KeyboardInterrupt

    script(
        kube,
        *((1, lambda j, r=r: running(kube, j, r)) for r in range(3)),
        (3, interrupt),
    )
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert kube.job(NS, run.name) is None
    assert not kube.pods_of({"metadata": {"uid": run.uid}})
    assert not kube.store["services"]


# --- logs ----------------------------------------------------------------------------------------


def rank_pod(name: str, rank: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)},
        },
        "status": {"containerStatuses": [{"name": "step", "state": {"running": {}}}]},
    }


def follow(ranks: int, only_rank: int | None = None) -> list[tuple[str, str]]:
    kube = FakeKube()
    pods = [rank_pod(f"p{r}", r) for r in range(ranks)]
    for r in range(ranks):
        kube.logs[(NS, f"p{r}", "step")] = [f"hello from {r}", "done"]
    lines: list[tuple[str, str]] = []
    follower = LogFollower(
        kube,
        NS,
        lambda pod, container, prefix, text: lines.append((prefix, text)),
        container_done=lambda pod, container: True,
        ranks=ranks,
        only_rank=only_rank,
    )
    follower.update(pods)
    deadline = time.monotonic() + 10
    while len(lines) < 2 * (ranks if only_rank is None else 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    follower.drain(pods, 5)
    return lines


def test_every_ranks_lines_are_prefixed_with_its_rank_once() -> None:
    lines = follow(3)
    assert sorted(lines) == sorted(
        [(f"[rank {r}] ", text) for r in range(3) for text in (f"hello from {r}", "done")]
    )


def test_rank_0_alone_when_asked() -> None:
    assert sorted(follow(3, only_rank=0)) == [("[rank 0] ", "done"), ("[rank 0] ", "hello from 0")]


def test_log_ranks_first_follows_rank_0_alone() -> None:
    kube, run, events = make(2, log_ranks="first", stream_logs=True)
    for r in range(2):
        kube.logs[(NS, f"{run.name}-{r}-abcde", "step")] = [f"line of {r}"]
    script(
        kube,
        *((1, lambda j, r=r: running(kube, j, r)) for r in range(2)),
        (2, lambda j: ended(kube, j, 0, 0)),
        (2, lambda j: ended(kube, j, 1, 0)),
        (2, lambda j: kube.set_job_condition(j, "SuccessCriteriaMet", "CompletionsReached")),
    )
    run.run()
    said = [(e.prefix, e.text) for e in events if isinstance(e, LogLine)]
    assert said == [("[rank 0] ", "line of 0")]
