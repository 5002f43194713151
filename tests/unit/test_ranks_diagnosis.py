"""Steps on several nodes, read with plain data: the step's phase from all its ranks, the rank
that failed first, what Kueue can never admit, whether the ranks could ever all be placed, and
what the tracker says and remembers of each rank."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from k8s_step_operator import (
    QueueError,
    RanksPlaced,
    StepFailedError,
    UnschedulableError,
)
from k8s_step_operator._runner.autoscaler import nodepool_room
from k8s_step_operator._runner.diagnosis import (
    Observation,
    Phase,
    Placement,
    Problem,
    QueueContext,
    decide,
    observe,
    outcome_error,
)
from k8s_step_operator._runner.fit import gang_room
from k8s_step_operator._runner.kueue import WorkloadState, never_admissible
from k8s_step_operator._runner.pods import rank_of
from k8s_step_operator._runner.tracker import Seen, StepContext, advance, start, timeline

WALL = datetime(2026, 1, 1, tzinfo=UTC)
INDEX = "batch.kubernetes.io/job-completion-index"
BLOCK = "k8s-step-operator.io/topology-block"
GPU = {"limits": {"nvidia.com/gpu": "8"}, "requests": {"nvidia.com/gpu": "8"}}
TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
TOLERATE = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SCHEDULER = "0/8 nodes are available: 4 Insufficient nvidia.com/gpu, 4 node(s) didn't match."


def job(ranks: int = 4, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"completions": ranks, "parallelism": ranks}
    if ranks > 1:
        spec["completionMode"] = "Indexed"
    return {
        "metadata": {"name": "train", "namespace": "ml", "uid": "u1", "labels": {}},
        "spec": spec,
        "status": status,
    }


def pod(rank: int, state: str = "running", node: str = "", **extra: Any) -> dict[str, Any]:
    """A rank's pod: ``pending`` (unschedulable), ``waiting`` (for the scheduler), ``starting``,
    ``running``, ``failed`` (exit ``code``), ``stopped`` (143, being deleted), ``succeeded``."""
    node = node or f"gpu-{rank}"
    meta: dict[str, Any] = {
        "name": f"train-{rank}-{extra.pop('suffix', 'x')}",
        "annotations": {INDEX: str(rank)},
        "creationTimestamp": extra.pop("created", "2026-01-01T00:00:00Z"),
    }
    spec: dict[str, Any] = {"nodeName": node}
    status: dict[str, Any] = {"phase": "Running"}
    if state == "pending":
        spec = {}
        status = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": SCHEDULER,
                }
            ],
        }
    elif state == "waiting":
        spec, status = {}, {"phase": "Pending"}
    elif state == "starting":
        status = {"phase": "Pending"}
    elif state == "running":
        status["containerStatuses"] = [{"name": "step", "state": {"running": {}}}]
    elif state in ("failed", "stopped", "succeeded"):
        code = {"failed": extra.pop("code", 3), "stopped": 143, "succeeded": 0}[state]
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "step",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "finishedAt": extra.pop("finished", "2026-01-01T00:01:00Z"),
                        }
                    },
                }
            ],
        }
        if state == "stopped":
            meta["deletionTimestamp"] = "2026-01-01T00:01:01Z"
    if extra.pop("disrupted", False):
        status.setdefault("conditions", []).append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
            }
        )
    return {"metadata": meta, "spec": spec, "status": status}


FAILED = {
    "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
    ]
}


# --- the step's phase from all its ranks ----------------------------------------------------------


def test_a_pod_of_a_job_of_one_rank_is_rank_0() -> None:
    assert rank_of({"metadata": {}}) == 0
    assert rank_of(pod(3)) == 3


def test_the_step_runs_when_every_rank_runs() -> None:
    obs = observe(job(), [pod(r) for r in range(4)])
    assert obs.phase is Phase.RUNNING
    assert obs.summary == "4 ranks running on gpu-0, gpu-1, gpu-2, gpu-3"
    assert [v.rank for v in obs.ranks] == [0, 1, 2, 3]
    assert all(v.phase is Phase.RUNNING for v in obs.ranks)
    assert obs.problem is None
    assert obs.node == "gpu-0"


def test_a_gang_that_cannot_all_be_placed_says_how_many_are_and_why_not_the_rest() -> None:
    pods = [pod(0), pod(1), pod(2), pod(3, "pending")]
    obs = observe(job(), pods)
    assert obs.phase is Phase.SCHEDULING
    assert obs.problem is Problem.UNSCHEDULABLE
    assert obs.summary == f"3 of 4 ranks scheduled; rank 3: unschedulable: {SCHEDULER}"
    assert obs.pod == "train-3-x"
    assert obs.message == SCHEDULER


def test_the_least_advanced_rank_leads_and_ranks_not_created_count() -> None:
    obs = observe(job(), [pod(0), pod(1, "starting"), pod(2, "starting")])
    assert obs.phase is Phase.SUBMITTED  # rank 3 has no pod yet
    assert obs.summary.startswith("3 of 4 ranks scheduled; rank 3: waiting for the Job")
    obs = observe(job(), [pod(0), pod(1, "starting"), pod(2), pod(3)])
    assert obs.phase is Phase.STARTING
    assert obs.summary == "4 of 4 ranks scheduled, 3 running; rank 1: starting on gpu-1"
    obs = observe(job(), [pod(0), pod(1, "waiting"), pod(2), pod(3)])
    assert obs.phase is Phase.SCHEDULING
    assert obs.problem is None


def test_any_ranks_problem_is_the_steps_the_most_urgent_first() -> None:
    bad_image = pod(2, "starting")
    bad_image["status"]["containerStatuses"] = [
        {"name": "step", "state": {"waiting": {"reason": "InvalidImageName", "message": "bad"}}}
    ]
    obs = observe(job(), [pod(0), pod(1, "pending"), bad_image, pod(3)])
    assert obs.problem is Problem.IMAGE_INVALID
    assert "rank 2: InvalidImageName" in obs.summary


def test_a_finished_rank_counts_as_placed_and_done() -> None:
    obs = observe(job(), [pod(0), pod(1, "succeeded"), pod(2), pod(3)])
    assert obs.phase is Phase.RUNNING
    assert obs.summary.startswith("4 ranks running")


def test_a_rank_replaced_after_a_disruption_is_said() -> None:
    old = pod(1, "stopped", suffix="old", disrupted=True)
    new = pod(1, "starting", suffix="new", created="2026-01-01T00:02:00Z")
    obs = observe(job(), [pod(0), old, new, pod(2), pod(3)])
    assert obs.phase is Phase.STARTING
    assert "rank 1 replaced after a disruption (EvictionByEvictionAPI)" in obs.summary
    running = dict(new, status={**new["status"], "phase": "Running"})
    running["status"]["containerStatuses"] = [{"name": "step", "state": {"running": {}}}]
    obs = observe(job(), [pod(0), old, running, pod(2), pod(3)])
    assert obs.phase is Phase.RUNNING
    assert "disruption" not in obs.summary


# --- the rank that failed -------------------------------------------------------------------------


def test_the_rank_that_failed_first_is_named_not_those_the_controller_stopped() -> None:
    pods = [
        pod(0, "stopped", finished="2026-01-01T00:01:02Z"),
        pod(1, "stopped", finished="2026-01-01T00:01:01Z"),
        pod(2, "failed", code=3, finished="2026-01-01T00:01:00Z"),
        pod(3, "stopped", finished="2026-01-01T00:01:01Z"),
    ]
    obs = observe(job(**FAILED), pods)
    assert obs.phase is Phase.FAILED
    outcome = obs.outcome
    assert outcome is not None and not outcome.succeeded
    assert (outcome.rank, outcome.pod, outcome.exit_code) == (2, "train-2-x", 3)
    assert outcome.message == "rank 2 exited with code 3; the step's other ranks are stopped"
    assert obs.summary == "failed: rank 2 BackoffLimitExceeded"
    error = outcome_error(outcome, job="train", namespace="ml", log_tail=["boom"])
    assert isinstance(error, StepFailedError)
    assert error.rank == 2 and error.exit_code == 3
    assert "rank 2, pod train-2-x container step" in str(error)
    assert "last lines of rank 2's log" in str(error)


IGNORE_DISRUPTIONS = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "step", "operator": "In", "values": [42]},
        },
    ]
}


def gang_job(**spec: Any) -> dict[str, Any]:
    j = job(4)
    j["spec"].update({"backoffLimit": 0, "podFailurePolicy": IGNORE_DISRUPTIONS, **spec})
    return j


def test_a_rank_that_failed_on_its_own_fails_the_step_before_the_controller_says_so() -> None:
    pods = [pod(0), pod(1), pod(2, "failed", code=3), pod(3)]
    obs = observe(gang_job(), pods)  # no FailureTarget on the Job yet
    assert obs.phase is Phase.FAILED
    assert obs.outcome is not None
    assert (obs.outcome.rank, obs.outcome.exit_code) == (2, 3)
    assert obs.summary == "failed: rank 2 Error"
    # FailJob's exit codes fail it too.
    obs = observe(gang_job(), [pod(0), pod(1, "failed", code=42), pod(2), pod(3)])
    assert obs.outcome is not None and obs.outcome.rank == 1


def test_what_the_job_controller_would_not_count_waits_for_its_verdict() -> None:
    # A disruption the policy ignores: the rank is replaced, the step goes on.
    disrupted = pod(1, "failed", code=143, disrupted=True)
    assert observe(gang_job(), [pod(0), disrupted, pod(2), pod(3)]).phase is not Phase.FAILED
    # A rank being deleted (by an eviction, by the controller): the Job decides.
    assert observe(gang_job(), [pod(0), pod(1, "stopped"), pod(2), pod(3)]).outcome is None
    # A Job that tolerates failures.
    lenient = gang_job(backoffLimit=3)
    assert observe(lenient, [pod(0), pod(1, "failed"), pod(2), pod(3)]).outcome is None
    # A Job of one pod: as before, the Job's conditions decide.
    one = job(1)
    one["spec"]["backoffLimit"] = 0
    assert observe(one, [pod(0, "failed")]).outcome is None


def test_of_two_ranks_that_failed_the_earlier_is_the_cause() -> None:
    pods = [
        pod(0, "failed", code=1, finished="2026-01-01T00:01:05Z"),
        pod(1, "failed", code=7, finished="2026-01-01T00:01:00Z"),
    ]
    outcome = observe(job(2, **FAILED), pods).outcome
    assert outcome is not None and (outcome.rank, outcome.exit_code) == (1, 7)


def test_a_disrupted_rank_that_fails_the_step_is_reported_as_disrupted() -> None:
    pods = [pod(0, "stopped"), pod(1, "stopped", disrupted=True)]
    outcome = observe(job(2, **FAILED), pods).outcome
    assert outcome is not None
    assert outcome.rank == 1
    assert outcome.reason == "EvictionByEvictionAPI"
    assert outcome.message == "rank 1 was disrupted: Eviction API: evicting"


def test_one_rank_keeps_the_last_failed_pod_as_before() -> None:
    pods = [pod(0, "failed", code=1, suffix="a"), pod(0, "failed", code=2, suffix="b")]
    for p in pods:
        p["metadata"]["annotations"] = {}
    outcome = observe(job(1, **FAILED), pods).outcome
    assert outcome is not None
    assert outcome.rank is None and outcome.exit_code == 2


# --- Kueue: what no wait can admit ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "never"),
    [
        (
            "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in "
            "flavor h100, previously considered podsets requests (0) + current podset request "
            "(32) > maximum capacity (24)",
            True,
        ),
        (
            'couldn\'t assign flavors to pod set main: Flavor "h100" does not contain the '
            "requested level",
            True,
        ),
        ('Flavor "h100" does not support TopologyAwareScheduling', True),
        ("insufficient unused quota for nvidia.com/gpu in flavor h100, 8 more needed", False),
        ("", False),
    ],
)
def test_kueue_words_that_mean_never(message: str, never: bool) -> None:
    assert bool(never_admissible(message)) is never
    wl = WorkloadState(name="w", waiting_reason="Pending", message=message)
    queued = job(4)
    queued["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    queued["spec"]["suspend"] = True
    obs = observe(queued, [], queue=QueueContext(workload=wl, cluster_queue="cq"))
    assert (obs.problem is Problem.QUEUE_REFUSED) is never
    if never:
        assert message in obs.message
        error = decide(obs, 0.0, Limits())
        assert isinstance(error, QueueError)
        assert "can never admit it" in str(error)


# --- whether the ranks could ever all be placed ---------------------------------------------------


def node(name: str, gpus: int = 8, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "h100", **labels}},
        "spec": {"taints": TAINT},
        "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "pods": "110", "cpu": "96"}},
    }


RANK = {
    "nodeSelector": {"pool": "h100"},
    "tolerations": TOLERATE,
    "containers": [{"name": "step", "resources": GPU}],
}


def test_gang_room_counts_ranks_per_node_and_per_domain() -> None:
    nodes = [
        node("a0", **{BLOCK: "a"}),
        node("a1", **{BLOCK: "a"}),
        node("b0", 16, **{BLOCK: "b"}),
        node("x", 4),  # too small for a rank
        node("c0"),  # no block label
        {**node("cpu"), "metadata": {"name": "cpu", "labels": {"pool": "cpu"}}},
    ]
    room = gang_room(RANK, nodes)  # type: ignore[arg-type]
    assert room.ranks == 5  # a0, a1, c0: one each; b0: two
    assert set(room.nodes) == {"a0", "a1", "b0", "c0"}
    by_block = gang_room(RANK, nodes, BLOCK)  # type: ignore[arg-type]
    assert by_block.per_domain == {"a": 2, "b": 2}
    assert by_block.ranks == 2 and by_block.domain == "b"
    assert by_block.unlabelled == ("c0",)
    assert gang_room(RANK, nodes, "no/such-level").per_domain == {}  # type: ignore[arg-type]


def test_a_nodepool_holds_what_its_limits_allow() -> None:
    pool = {"metadata": {"name": "p"}, "spec": {"limits": {"nvidia.com/gpu": "16", "cpu": "1k"}}}
    assert nodepool_room(pool, RANK) == 2  # type: ignore[arg-type]
    assert nodepool_room({"metadata": {"name": "p"}, "spec": {}}, RANK) is None  # type: ignore[arg-type]
    cpu_only = {"metadata": {"name": "p"}, "spec": {"limits": {"cpu": "100"}}}
    assert nodepool_room(cpu_only, RANK) is None  # type: ignore[arg-type]


@dataclass(frozen=True)
class Limits:
    pending_timeout: float | None = 600.0
    image_pull_backoff_timeout: float | None = 300.0
    missing_config_grace: float = 30.0
    queue_timeout: float | None = None
    scale_up_timeout: float | None = 900.0
    active_deadline_seconds: int | None = None


def test_an_impossible_gang_fails_at_once_naming_num_nodes() -> None:
    obs = observe(job(), [pod(0), pod(1), pod(2), pod(3, "pending")])
    why = "the 4 ranks can never all be placed at once: settings.num_nodes 4: ... at most 3"
    error = decide(obs, 0.0, Limits(), Placement(never_fits=True, gang=why), job="train")
    assert isinstance(error, UnschedulableError)
    assert "settings.num_nodes 4" in str(error)
    assert "3 of 4 ranks scheduled" in str(error)
    assert error.rank == 3 and error.pod == "train-3-x"
    assert error.breakdown == SCHEDULER
    # A gang that may fit waits for its pending timeout, and then says how far it got.
    assert decide(obs, 10.0, Limits(), Placement()) is None
    late = decide(obs, 600.0, Limits(), Placement())
    assert isinstance(late, UnschedulableError)
    assert "pending timeout" in str(late) and "3 of 4 ranks scheduled" in str(late)


# --- the tracker ----------------------------------------------------------------------------------


def context(ranks: int = 2, topology: str = BLOCK) -> StepContext:
    return StepContext(
        step="train",
        job="train",
        namespace="ml",
        bounds=Limits(),  # type: ignore[arg-type]
        gpus=8,
        gpu_resource="nvidia.com/gpu",
        ranks=ranks,
        topology=topology,
    )


def test_the_tracker_remembers_each_rank_and_says_once_where_the_ranks_landed() -> None:
    ctx = context()
    state = start(0.0)
    partial = observe(job(2), [pod(0, node="gpu-h100-2"), pod(1, "pending")])
    step = advance(ctx, state, Seen(partial), 1.0, WALL)
    assert not [e for e in step.events if isinstance(e, RanksPlaced)]
    assert step.state.ranks[0].node == "gpu-h100-2"
    assert step.state.ranks[1].phase is Phase.SCHEDULING and not step.state.ranks[1].node

    full = observe(job(2), [pod(0, node="gpu-h100-2"), pod(1, node="gpu-h100-3")])
    domains = {"gpu-h100-2": "block-b", "gpu-h100-3": "block-b"}
    step = advance(ctx, step.state, Seen(full, domains=domains), 2.0, WALL)
    (placed,) = [e for e in step.events if isinstance(e, RanksPlaced)]
    assert dict(placed.nodes) == {0: "gpu-h100-2", 1: "gpu-h100-3"}
    assert placed.text == (
        f"2 ranks placed: rank 0 on gpu-h100-2, rank 1 on gpu-h100-3; all in {BLOCK}=block-b"
    )
    assert step.state.placed
    again = advance(ctx, step.state, Seen(full, domains=domains), 3.0, WALL)
    assert not [e for e in again.events if isinstance(e, RanksPlaced)]
    spent = timeline(ctx, again.state, 13.0)
    assert spent.ranks == 2
    assert spent.gpu_seconds == pytest.approx(8 * 2 * 11.0)


def test_placement_across_domains_or_unknown_is_said_as_it_is() -> None:
    across = RanksPlaced(
        at=WALL,
        step="s",
        job="j",
        namespace="n",
        nodes={0: "a", 1: "b"},
        level=BLOCK,
        domains={"a": "block-a", "b": "block-b"},
    )
    assert across.text.endswith(f"across {BLOCK} block-a, block-b")
    unknown = RanksPlaced(at=WALL, step="s", job="j", namespace="n", nodes={0: "a"}, level=BLOCK)
    assert "not known" in unknown.text
    plain = RanksPlaced(at=WALL, step="s", job="j", namespace="n", nodes={0: "a", 1: "b"})
    assert plain.text == "2 ranks placed: rank 0 on a, rank 1 on b"


def test_a_step_of_one_pod_is_tracked_as_before() -> None:
    ctx = context(1, "")
    obs = Observation(Phase.RUNNING, "running on gpu-0", pod="p", node="gpu-0")
    step = advance(ctx, start(0.0), Seen(obs), 1.0, WALL)
    assert dict(step.state.ranks)[0].node == "gpu-0"
    assert not [e for e in step.events if isinstance(e, RanksPlaced)]
    assert timeline(ctx, step.state, 2.0).ranks == 1
