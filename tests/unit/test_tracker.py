"""The step tracker, driven with plain data: one call per look, no API, no clock, no threads.

Each test builds the observations the diagnosis would make and checks the state, the events and
the action the tracker returns, through every phase, bound and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from k8s_step_operator import (
    Admitted,
    ContainerConfigError,
    DeadlineExceededError,
    Heartbeat,
    ImageError,
    PhaseChanged,
    Preempted,
    QueueError,
    UnschedulableError,
)
from k8s_step_operator._runner.diagnosis import Observation, Outcome, Phase, Placement, Problem
from k8s_step_operator._runner.kueue import WorkloadState
from k8s_step_operator._runner.tracker import (
    EXIT_CODE_GRACE,
    HEARTBEAT_SECONDS,
    MISSING_GRACE,
    Action,
    Advance,
    Seen,
    StepContext,
    TrackerState,
    advance,
    bound_of,
    start,
    timeline,
)

WALL = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Limits:
    pending_timeout: float | None = 300.0
    image_pull_backoff_timeout: float | None = 120.0
    missing_config_grace: float = 30.0
    queue_timeout: float | None = None
    scale_up_timeout: float | None = 600.0
    active_deadline_seconds: int | None = None


def context(**bounds: float | None) -> StepContext:
    return StepContext(
        step="train",
        job="train-abc",
        namespace="ml",
        bounds=Limits(**bounds),  # type: ignore[arg-type]
        step_run_id="sr-1",
        gpus=2,
        gpu_resource="nvidia.com/gpu",
    )


SUBMITTED = Observation(Phase.SUBMITTED, "waiting for the Job controller to create a pod")
SCHEDULING = Observation(Phase.SCHEDULING, "waiting for the scheduler", pod="p-0")
STARTING = Observation(Phase.STARTING, "starting on gpu-0", pod="p-0", node="gpu-0")
RUNNING = Observation(Phase.RUNNING, "running on gpu-0", pod="p-0", node="gpu-0")
SUCCEEDED = Observation(Phase.SUCCEEDED, "succeeded", outcome=Outcome(succeeded=True))
UNSCHEDULABLE = Observation(
    Phase.SCHEDULING,
    "unschedulable: 0/3 nodes are available",
    pod="p-0",
    problem=Problem.UNSCHEDULABLE,
    reason="Unschedulable",
    message="0/3 nodes are available",
)
QUEUED = Observation(Phase.QUEUED, "queued in LocalQueue gpu", queue="gpu", message="quota")


def failed(code: int | None, job_reason: str = "BackoffLimitExceeded") -> Observation:
    outcome = Outcome(
        succeeded=False,
        reason="Error",
        message="boom",
        pod="p-0",
        container="step",
        exit_code=code,
        job_reason=job_reason,
    )
    return Observation(Phase.FAILED, "failed: Error", pod="p-0", outcome=outcome)


class Drive:
    """Feeds the tracker one look at a time, as the runner does."""

    def __init__(self, ctx: StepContext | None = None, t: float = 1000.0) -> None:
        self.ctx = ctx or context()
        self.t = t
        self.state: TrackerState = start(t)
        self.events: list[object] = []

    def look(self, seen: Seen | Observation | None, at: float | None = None) -> Advance:
        if at is not None:
            self.t = at
        if not isinstance(seen, Seen):
            seen = Seen(seen)
        step = advance(self.ctx, self.state, seen, self.t, WALL)
        self.state = step.state
        self.events += step.events
        return step

    def phases(self) -> list[tuple[Phase, Phase | None]]:
        return [(e.phase, e.previous) for e in self.events if isinstance(e, PhaseChanged)]


def test_a_step_goes_through_its_phases_and_succeeds_with_its_timeline() -> None:
    d = Drive()
    for obs, at in [
        (SUBMITTED, 1000.0),
        (SCHEDULING, 1001.0),
        (STARTING, 1003.0),
        (RUNNING, 1010.0),
    ]:
        assert d.look(obs, at).action is Action.WAIT
    end = d.look(SUCCEEDED, 1070.0)
    assert end.action is Action.SUCCEEDED and end.outcome is not None and end.outcome.succeeded
    assert d.phases() == [
        (Phase.SUBMITTED, None),
        (Phase.SCHEDULING, Phase.SUBMITTED),
        (Phase.STARTING, Phase.SCHEDULING),
        (Phase.RUNNING, Phase.STARTING),
        (Phase.SUCCEEDED, Phase.RUNNING),
    ]
    events = [e for e in d.events if isinstance(e, PhaseChanged)]
    assert all(e.step == "train" and e.job == "train-abc" and e.at == WALL for e in events)
    assert events[3].node == "gpu-0" and events[3].entered
    line = timeline(d.ctx, d.state, 1070.0)
    assert line.of(Phase.SCHEDULING) == 2.0
    assert line.of(Phase.STARTING) == 7.0
    assert line.of(Phase.RUNNING) == 60.0
    assert line.node == "gpu-0"
    assert line.gpu_seconds == 120.0  # 2 GPUs for 60 s


def test_the_tracker_is_pure() -> None:
    ctx, state = context(), start(0.0)
    first = advance(ctx, state, Seen(RUNNING), 5.0, WALL)
    again = advance(ctx, state, Seen(RUNNING), 5.0, WALL)
    assert first == again
    assert state == start(0.0)  # the input state is untouched


def test_a_missing_job_is_read_from_the_server_after_a_grace() -> None:
    d = Drive()
    assert d.look(None, 1000.0).action is Action.WAIT
    assert d.look(None, 1000.0 + MISSING_GRACE).action is Action.WAIT
    assert d.look(None, 1000.1 + MISSING_GRACE).action is Action.READ_JOB
    # The grace starts again after the read.
    assert d.look(None, 1000.2 + MISSING_GRACE).action is Action.WAIT
    # Seeing the Job resets it.
    d.look(RUNNING, 1010.0)
    assert d.look(None, 1010.0 + MISSING_GRACE).action is Action.WAIT


def test_a_job_seen_deleted_ends_the_step() -> None:
    assert Drive().look(Seen(None, deleted=True)).action is Action.DELETED


def test_only_problems_and_waiting_phases_repeat_a_changed_summary() -> None:
    d = Drive()
    d.look(RUNNING, 1000.0)
    d.look(Observation(Phase.RUNNING, "running on gpu-1", pod="p-0", node="gpu-1"), 1001.0)
    assert len(d.phases()) == 1  # a running step's summary is not news
    d.look(QUEUED, 1002.0)
    d.look(Observation(Phase.QUEUED, "queued, position 2", queue="gpu"), 1003.0)
    assert d.phases()[-2:] == [(Phase.QUEUED, Phase.RUNNING), (Phase.QUEUED, Phase.QUEUED)]
    repeat = [e for e in d.events if isinstance(e, PhaseChanged)][-1]
    assert not repeat.entered and repeat.elapsed == 1.0


def test_a_heartbeat_after_a_silent_minute_names_the_bound() -> None:
    d = Drive(context(pending_timeout=600))
    d.look(SCHEDULING, 1000.0)
    d.look(SCHEDULING, 1000.0 + HEARTBEAT_SECONDS - 1)
    assert not [e for e in d.events if isinstance(e, Heartbeat)]
    d.look(SCHEDULING, 1000.0 + HEARTBEAT_SECONDS)
    (beat,) = [e for e in d.events if isinstance(e, Heartbeat)]
    assert (beat.phase, beat.elapsed) == (Phase.SCHEDULING, HEARTBEAT_SECONDS)
    assert (beat.bound_name, beat.bound) == ("pending_timeout", 600)
    # The next one comes a minute later, not at every look.
    d.look(SCHEDULING, 1000.0 + HEARTBEAT_SECONDS + 1)
    assert len([e for e in d.events if isinstance(e, Heartbeat)]) == 1


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (Observation(Phase.STARTING, "", problem=Problem.IMAGE_PULL), "image_pull_backoff_timeout"),
        (Observation(Phase.STARTING, "", problem=Problem.MISSING_CONFIG), "missing_config_grace"),
        (QUEUED, "queue_timeout"),
        (SCHEDULING, "pending_timeout"),
        (RUNNING, "active_deadline_seconds"),
        (STARTING, ""),
    ],
)
def test_each_phase_has_its_bound(obs: Observation, expected: str) -> None:
    assert bound_of(obs, Limits())[0] == expected


def test_a_failure_with_its_exit_code_fails_at_once() -> None:
    step = Drive().look(failed(3))
    assert step.action is Action.FAILED
    assert step.outcome is not None and step.outcome.exit_code == 3


def test_a_failure_waits_briefly_for_its_exit_code() -> None:
    d = Drive()
    assert d.look(failed(None), 1000.0).action is Action.WAIT
    assert d.look(failed(None), 1000.0 + EXIT_CODE_GRACE - 0.1).action is Action.WAIT
    assert d.look(failed(None), 1000.0 + EXIT_CODE_GRACE).action is Action.FAILED


def test_a_deadline_never_waits_for_an_exit_code() -> None:
    assert Drive().look(failed(None, "DeadlineExceeded")).action is Action.FAILED


def test_a_pod_no_node_can_ever_fit_gives_up_at_once() -> None:
    seen = Seen(UNSCHEDULABLE, placement=Placement(never_fits=True, advice="ask for 8 GPUs"))
    step = Drive().look(seen)
    assert step.action is Action.GIVE_UP
    assert isinstance(step.error, UnschedulableError)
    assert "ask for 8 GPUs" in str(step.error)
    assert step.error.job == "train-abc" and step.error.namespace == "ml"


def test_an_autoscaler_that_may_act_is_waited_for_up_to_its_bound() -> None:
    d = Drive(context(scale_up_timeout=100))
    place = Placement(never_fits=True, advice="x", may_act=frozenset({"cluster-autoscaler"}))
    assert d.look(Seen(UNSCHEDULABLE, placement=place), 1000.0).action is Action.WAIT
    assert d.look(Seen(UNSCHEDULABLE, placement=place), 1099.0).action is Action.WAIT
    step = d.look(Seen(UNSCHEDULABLE, placement=place), 1100.0)
    assert step.action is Action.GIVE_UP and "scale_up_timeout" in str(step.error)


def test_an_autoscaler_that_cannot_be_seen_is_given_its_short_grace() -> None:
    d = Drive()
    place = Placement(never_fits=True, may_act=frozenset({"unseen"}), autoscaler_wait=20.0)
    assert d.look(Seen(UNSCHEDULABLE, placement=place), 1000.0).action is Action.WAIT
    step = d.look(Seen(UNSCHEDULABLE, placement=place), 1020.0)
    assert step.action is Action.GIVE_UP and "no autoscaler spoke" in str(step.error)


def test_busy_nodes_are_bounded_by_the_pending_timeout() -> None:
    d = Drive(context(pending_timeout=30))
    busy = Seen(UNSCHEDULABLE, placement=Placement(never_fits=False))
    assert d.look(busy, 1000.0).action is Action.WAIT
    assert d.look(busy, 1029.0).action is Action.WAIT
    step = d.look(busy, 1030.0)
    assert step.action is Action.GIVE_UP and "pending timeout" in str(step.error)


def test_the_placement_is_read_only_for_an_unschedulable_pod() -> None:
    # A placement left over from an earlier look never decides another phase.
    seen = Seen(SCHEDULING, placement=Placement(never_fits=True))
    assert Drive().look(seen).action is Action.WAIT


def test_waiting_for_the_scheduler_counts_the_phase_not_a_problem() -> None:
    d = Drive(context(pending_timeout=10))
    d.look(SCHEDULING, 1000.0)
    assert d.look(SCHEDULING, 1009.0).action is Action.WAIT
    assert isinstance(d.look(SCHEDULING, 1010.0).error, UnschedulableError)


def test_a_queue_bound_gives_up_with_kueues_words() -> None:
    d = Drive(context(queue_timeout=60))
    d.look(QUEUED, 1000.0)
    step = d.look(QUEUED, 1060.0)
    assert isinstance(step.error, DeadlineExceededError)
    assert "queue_timeout" in str(step.error) and "LocalQueue gpu" in str(step.error)


def test_a_queue_that_refuses_gives_up_at_once() -> None:
    refused = Observation(
        Phase.QUEUED, "x", problem=Problem.QUEUE_REFUSED, message="no LocalQueue", queue="gpu"
    )
    assert isinstance(Drive().look(refused).error, QueueError)


def test_image_and_config_problems_have_their_own_clocks() -> None:
    d = Drive(context(image_pull_backoff_timeout=60))
    pull = Observation(Phase.STARTING, "ErrImagePull", problem=Problem.IMAGE_PULL, message="x")
    config = Observation(Phase.STARTING, "x", problem=Problem.MISSING_CONFIG, message="no secret")
    d.look(pull, 1000.0)
    d.look(config, 1050.0)  # another problem: the image clock stops
    assert d.look(pull, 1100.0).action is Action.WAIT  # and starts again from here
    assert isinstance(d.look(pull, 1160.0).error, ImageError)
    d2 = Drive()
    d2.look(config, 1000.0)
    assert isinstance(d2.look(config, 1030.0).error, ContainerConfigError)


def test_an_invalid_image_gives_up_at_once() -> None:
    bad = Observation(Phase.STARTING, "x", problem=Problem.IMAGE_INVALID, message="bad name")
    assert isinstance(Drive().look(bad).error, ImageError)


def test_kueue_admission_and_preemption_are_said_once_each() -> None:
    d = Drive()
    pending = WorkloadState(name="wl", waiting_reason="Pending", message="quota")
    admitted = WorkloadState(
        name="wl", cluster_queue="gpu-cq", admitted=True, flavors={"nvidia.com/gpu": "h100"}
    )
    evicted = WorkloadState(
        name="wl", evicted="preempted by a higher priority", evicted_reason="Preempted"
    )
    d.look(Seen(QUEUED, workload=pending), 1000.0)
    d.look(Seen(QUEUED, workload=admitted), 1001.0)
    d.look(Seen(RUNNING, workload=admitted), 1002.0)
    d.look(Seen(QUEUED, workload=evicted), 1010.0)
    d.look(Seen(QUEUED, workload=evicted), 1011.0)
    d.look(Seen(RUNNING, workload=admitted), 1020.0)
    said = [e for e in d.events if isinstance(e, (Admitted, Preempted))]
    assert [type(e).__name__ for e in said] == ["Admitted", "Preempted", "Admitted"]
    first = said[0]
    assert isinstance(first, Admitted)
    assert first.cluster_queue == "gpu-cq" and dict(first.flavors) == {"nvidia.com/gpu": "h100"}
    assert isinstance(said[1], Preempted) and said[1].reason == "Preempted"
    # Both stays in the queue count.
    assert timeline(d.ctx, d.state, 1020.0).of(Phase.QUEUED) == 2.0 + 10.0


def test_each_rank_is_tracked_with_its_pod_and_node() -> None:
    d = Drive()
    d.look(SCHEDULING, 1000.0)
    assert d.state.ranks[0].pod == "p-0" and d.state.ranks[0].node == ""
    d.look(STARTING, 1002.0)
    d.look(RUNNING, 1004.0)
    rank = d.state.ranks[0]
    assert (rank.phase, rank.since, rank.node) == (Phase.RUNNING, 1004.0, "gpu-0")
    # A retried pod replaces the rank's entry.
    d.look(Observation(Phase.SCHEDULING, "x", pod="p-1"), 1010.0)
    assert d.state.ranks[0].pod == "p-1" and d.state.ranks[0].node == ""
    assert d.state.node == ""
