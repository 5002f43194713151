"""The pure reading of Jobs, pods and events into phases, problems and errors."""

from __future__ import annotations

from typing import Any

import pytest

from k8s_step_operator import (
    AdmissionRejectedError,
    ContainerConfigError,
    DeadlineExceededError,
    ImageError,
    KubernetesJobStepOperatorSettings,
    OOMKilledError,
    StepFailedError,
    UnschedulableError,
)
from k8s_step_operator._job.quantity import parse_quantity
from k8s_step_operator._runner.diagnosis import (
    Phase,
    Placement,
    Problem,
    decide,
    observe,
    outcome_error,
)
from k8s_step_operator._runner.fit import fits_somewhere
from k8s_step_operator._runner.tracker import problem_age


def job(*conditions: tuple[str, str, str], suspend: bool = False, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "uid": "u1", "labels": labels},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{r} message"}
                for t, s, r in conditions
            ]
        },
    }


def pod(
    name: str = "j-abcde",
    *,
    phase: str = "Pending",
    node: str | None = None,
    state: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "main", "state": state}]
    if reason:
        status["reason"] = reason
        status["message"] = f"{reason} detail"
    spec = {"nodeName": node} if node else {}
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
        "status": status,
    }


def test_success_from_either_condition_in_either_order() -> None:
    for conds in (
        [("SuccessCriteriaMet", "True", "CompletionsReached")],
        [("Complete", "True", "")],
        [("Complete", "True", ""), ("SuccessCriteriaMet", "True", "")],
    ):
        obs = observe(job(*conds), [])
        assert obs.phase is Phase.SUCCEEDED
        assert obs.outcome is not None and obs.outcome.succeeded


def test_condition_status_must_be_true() -> None:
    obs = observe(job(("Complete", "False", "")), [])
    assert obs.outcome is None


def test_failure_target_with_exit_code() -> None:
    failed = pod(
        phase="Failed", node="n1", state={"terminated": {"exitCode": 42, "reason": "Error"}}
    )
    obs = observe(job(("FailureTarget", "True", "BackoffLimitExceeded")), [failed])
    assert obs.phase is Phase.FAILED
    assert obs.outcome is not None
    assert obs.outcome.exit_code == 42
    assert obs.outcome.pod == "j-abcde" and obs.outcome.container == "main"
    err = outcome_error(obs.outcome, job="j", namespace="ns")
    assert type(err) is StepFailedError
    assert err.exit_code == 42 and "exit code 42" in str(err)


def test_oom_killed() -> None:
    failed = pod(
        phase="Failed", node="n1", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    )
    obs = observe(job(("Failed", "True", "BackoffLimitExceeded")), [failed])
    assert obs.outcome is not None and obs.outcome.oom_killed
    assert isinstance(outcome_error(obs.outcome), OOMKilledError)


def test_deadline_exceeded_without_exit_code() -> None:
    running = pod(phase="Running", node="n1", state={"running": {}})
    obs = observe(job(("FailureTarget", "True", "DeadlineExceeded")), [running])
    assert obs.outcome is not None
    assert isinstance(outcome_error(obs.outcome), DeadlineExceededError)


def test_kubelet_rejection_reason_kept() -> None:
    rejected = pod(phase="Failed", node="n1", reason="UnexpectedAdmissionError")
    obs = observe(job(("Failed", "True", "BackoffLimitExceeded")), [rejected])
    assert obs.outcome is not None and obs.outcome.reason == "UnexpectedAdmissionError"


def test_queued_when_suspended() -> None:
    obs = observe(
        job(
            ("Suspended", "True", "JobSuspended"),
            suspend=True,
            **{"kueue.x-k8s.io/queue-name": "gpu"},
        ),
        [],
    )
    assert obs.phase is Phase.QUEUED and "gpu" in obs.summary


def test_failed_create_is_admission_problem() -> None:
    event = {
        "reason": "FailedCreate",
        "involvedObject": {"kind": "Job", "name": "j"},
        "message": 'pods "j-x" is forbidden: exceeded quota: gpu, requested: nvidia.com/gpu=1',
    }
    obs = observe(job(), [], [event])
    assert obs.problem is Problem.ADMISSION
    err = decide(obs, 0.0, KubernetesJobStepOperatorSettings(), job="j", namespace="ns")
    assert isinstance(err, AdmissionRejectedError) and "exceeded quota" in str(err)


def test_unschedulable_waits_until_pending_timeout_unless_never_fits() -> None:
    message = "0/6 nodes are available: 2 Insufficient nvidia.com/gpu."
    p = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ]
    )
    obs = observe(job(), [p])
    assert obs.phase is Phase.SCHEDULING and obs.problem is Problem.UNSCHEDULABLE
    limits = KubernetesJobStepOperatorSettings(pending_timeout=30)
    assert decide(obs, 29.0, limits) is None
    late = decide(obs, 30.0, limits)
    assert isinstance(late, UnschedulableError) and "pending timeout" in str(late)
    now = decide(obs, 0.0, limits, Placement(never_fits=True))
    assert isinstance(now, UnschedulableError)
    assert "Insufficient nvidia.com/gpu" in str(now) and now.breakdown == message


def test_unschedulable_message_from_event_when_condition_has_none() -> None:
    p = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    ev = {
        "reason": "FailedScheduling",
        "involvedObject": {"kind": "Pod", "name": "j-abcde"},
        "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity.",
    }
    obs = observe(job(), [p], [ev])
    assert "node affinity" in obs.message


@pytest.mark.parametrize(
    ("reason", "problem", "at", "error"),
    [
        ("InvalidImageName", Problem.IMAGE_INVALID, 0.0, ImageError),
        ("ErrImageNeverPull", Problem.IMAGE_INVALID, 0.0, ImageError),
        ("ImagePullBackOff", Problem.IMAGE_PULL, 300.0, ImageError),
        ("CreateContainerConfigError", Problem.MISSING_CONFIG, 30.0, ContainerConfigError),
    ],
)
def test_starting_problems_have_their_own_bounds(
    reason: str, problem: Problem, at: float, error: type[Exception]
) -> None:
    p = pod(node="n1", state={"waiting": {"reason": reason, "message": "detail"}})
    obs = observe(job(), [p])
    assert obs.phase is Phase.STARTING and obs.problem is problem
    if at > 0:
        assert decide(obs, at - 1, KubernetesJobStepOperatorSettings()) is None
    assert isinstance(decide(obs, at, KubernetesJobStepOperatorSettings()), error)


def test_running_and_starting() -> None:
    assert observe(job(), [pod(node="n1", state={"running": {}})]).phase is Phase.RUNNING
    starting = pod(node="n1", state={"waiting": {"reason": "ContainerCreating"}})
    assert observe(job(), [starting]).phase is Phase.STARTING
    assert observe(job(), []).phase is Phase.SUBMITTED


def test_timers_reset_when_problem_changes() -> None:
    since, age = problem_age({}, Problem.IMAGE_PULL, 10.0)
    assert age == 0.0
    since, age = problem_age(since, Problem.IMAGE_PULL, 15.0)
    assert age == 5.0
    since, age = problem_age(since, None, 16.0)
    assert age == 0.0
    since, age = problem_age(since, Problem.IMAGE_PULL, 20.0)
    assert age == 0.0


def test_quantities() -> None:
    assert parse_quantity("500m") == 0.5
    assert parse_quantity("16Gi") == 16 * 1024**3
    assert parse_quantity("8") == 8
    assert parse_quantity("1e3") == 1000
    with pytest.raises(ValueError):
        parse_quantity("lots")


GPU_NODE = {
    "metadata": {"name": "h100-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
    "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"}},
}
CPU_NODE = {
    "metadata": {"name": "cpu-0", "labels": {}},
    "spec": {},
    "status": {"allocatable": {"cpu": "16", "memory": "64Gi"}},
}
TOLERATE = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def spec(gpus: int, *, tolerations: Any = TOLERATE, selector: Any = None) -> dict[str, Any]:
    return {
        "nodeSelector": selector or {},
        "tolerations": tolerations,
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus), "cpu": "1"}}}],
    }


def test_fit_check() -> None:
    assert fits_somewhere(spec(8), [GPU_NODE, CPU_NODE])[0]
    fits, reasons = fits_somewhere(spec(9), [GPU_NODE, CPU_NODE])
    assert not fits
    assert any("nvidia.com/gpu requested 9, allocatable 8" in r for r in reasons)
    assert not fits_somewhere(spec(1, tolerations=[]), [GPU_NODE, CPU_NODE])[0]
    sel = {"nvidia.com/gpu.product": "NVIDIA-A100"}
    assert not fits_somewhere(spec(1, selector=sel), [GPU_NODE])[0]
    affinity = dict(spec(1))
    affinity["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-H100-80GB-HBM3"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    assert fits_somewhere(affinity, [GPU_NODE])[0]
