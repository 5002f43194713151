"""Queued steps explained in Kueue's words: quota, a missing LocalQueue, no Kueue, preemption.

The in-memory API plays Kueue by writing what it writes: the Job suspended, its Workload's
conditions and admission, the Job resumed or suspended again. Time is fake.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from k8s_step_operator import (
    DeadlineExceededError,
    ForbiddenError,
    KubernetesJobStepOperatorSettings,
    NotFoundError,
    QueueError,
    ResourceSettings,
    StepConfiguration,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._runner.kueue import read_workload
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeClock, FakeKube, SyncWatchers

NS = "ml"
QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in "
    "flavor h100, 2 more needed"
)
PREEMPTED = (
    "Preempted to accommodate a workload (UID: a, JobUID: b) due to prioritization in the "
    "ClusterQueue; preemptor path: /team; preemptee path: /team"
)


def make(**overrides: Any) -> tuple[FakeKube, StepRun]:
    clock = FakeClock()
    kube = FakeKube(clock)
    settings = KubernetesJobStepOperatorSettings(
        namespace=NS, image="img:1", stream_logs=False, queue_name="gpus", **overrides
    )
    info = StepRunInfo(
        step_run_id="sr",
        run_id="run",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=2)),
    )
    job = build_job(info, ["python"], {}, settings)
    run = StepRun(
        kube,
        job,
        step=StepIdentity("run", "train", "sr"),
        settings=settings,
        clock=clock,
        watchers=SyncWatchers(kube),
    )
    return kube, run


def local_queue(kube: FakeKube) -> None:
    kube.put("localqueues", NS, {"metadata": {"name": "gpus"}, "spec": {"clusterQueue": "team"}})


def workload(
    kube: FakeKube, job: dict[str, Any], *conditions: dict[str, str], **status: Any
) -> None:
    name = f"job-{job['metadata']['name']}-0ec0c"
    existing = kube.store["workloads"].get((NS, name))
    wl = (
        copy.deepcopy(existing)
        if existing
        else {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": name,
                "labels": {"kueue.x-k8s.io/job-uid": job["metadata"]["uid"]},
                "ownerReferences": [
                    {"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}
                ],
            },
            "spec": {"queueName": "gpus"},
            "status": {},
        }
    )
    wl["status"] = {
        "conditions": [dict(c, status=c.get("status", "True")) for c in conditions],
        **status,
    }
    kube.put("workloads", NS, wl)


def pending(
    kube: FakeKube, job: dict[str, Any], reason: str = "Pending", message: str = QUOTA
) -> None:
    workload(
        kube,
        job,
        {"type": "QuotaReserved", "status": "False", "reason": reason, "message": message},
    )


ADMISSION = {
    "clusterQueue": "team",
    "podSetAssignments": [{"name": "main", "flavors": {"nvidia.com/gpu": "h100"}, "count": 1}],
}


def admit(kube: FakeKube, job: dict[str, Any]) -> None:
    workload(
        kube,
        job,
        {
            "type": "QuotaReserved",
            "reason": "QuotaReserved",
            "message": "Quota reserved in ClusterQueue team",
        },
        {"type": "Admitted", "reason": "Admitted", "message": "The workload is admitted"},
        admission=ADMISSION,
    )
    current = kube.job(NS, job["metadata"]["name"])
    assert current is not None
    spec = dict(current["spec"], suspend=False)
    kube.set_job(current, spec=spec)


def run_pod(kube: FakeKube, job: dict[str, Any], suffix: str = "abcde") -> None:
    kube.set_pod(
        job,
        suffix,
        spec={"nodeName": "gpu-0"},
        phase="Running",
        containerStatuses=[{"name": "step", "state": {"running": {}}}],
    )


def finish(kube: FakeKube, job: dict[str, Any], suffix: str = "abcde") -> None:
    kube.set_pod(
        job,
        suffix,
        phase="Succeeded",
        containerStatuses=[
            {"name": "step", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ],
    )
    kube.set_job_condition(job, "Complete")


def preempt(kube: FakeKube, job: dict[str, Any]) -> None:
    current = kube.job(NS, job["metadata"]["name"])
    assert current is not None
    kube.set_job(current, spec=dict(current["spec"], suspend=True))
    kube.remove("pods", NS, f"{job['metadata']['name']}-abcde")
    workload(
        kube,
        job,
        {"type": "Evicted", "reason": "Preempted", "message": PREEMPTED},
        {"type": "Preempted", "reason": "InClusterQueue", "message": PREEMPTED},
        {"type": "Requeued", "reason": "Preempted", "message": PREEMPTED},
        {
            "type": "Admitted",
            "status": "False",
            "reason": "NoReservation",
            "message": "The workload has no reservation",
        },
        {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": QUOTA},
    )


def script(kube: FakeKube, *steps: tuple[float, Any]) -> None:
    def on_create(job: dict[str, Any]) -> None:
        for delay, action in steps:
            name = job["metadata"]["name"]
            kube.clock.after(delay, lambda action=action, name=name: action(kube.job(NS, name)))

    kube.on_create = on_create


def test_a_step_waiting_for_quota_says_why_and_where_then_runs_when_admitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make()
    local_queue(kube)
    kube.visibility = {}
    script(
        kube,
        (0.2, lambda j: pending(kube, j)),
        (
            0.3,
            lambda j: kube.visibility.__setitem__(
                (NS, "gpus"),
                [  # type: ignore[union-attr]
                    {"metadata": {"name": "job-other"}, "positionInLocalQueue": 0},
                    {
                        "metadata": {"name": f"job-{j['metadata']['name']}-0ec0c"},
                        "positionInLocalQueue": 1,
                    },
                ],
            ),
        ),
        (30, lambda j: admit(kube, j)),
        (31, lambda j: run_pod(kube, j)),
        (40, lambda j: finish(kube, j)),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    text = caplog.text
    assert "queued in LocalQueue gpus (ClusterQueue team)" in text
    assert "insufficient unused quota for nvidia.com/gpu in flavor h100, 2 more needed" in text
    assert "position 2" in text
    assert "admitted by Kueue to ClusterQueue team with flavor nvidia.com/gpu=h100" in text


def test_a_missing_local_queue_fails_at_once_with_what_to_do() -> None:
    kube, run = make(queue_timeout=600)
    with pytest.raises(QueueError) as raised:
        run.run()
    assert "LocalQueue gpus does not exist in this namespace: create it" in str(raised.value)
    assert kube.clock.t - 1000 < 2
    assert kube.job(NS, run.name) is None  # nothing left queued


def test_kueues_own_inadmissible_reason_fails_at_once() -> None:
    kube, run = make()
    kube.put("localqueues", NS, {"metadata": {"name": "gpus"}, "spec": {"clusterQueue": "gone"}})
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue gone is inactive")))
    with pytest.raises(QueueError) as raised:
        run.run()
    assert "Kueue cannot admit it: ClusterQueue gone is inactive" in str(raised.value)


def test_without_kueue_a_queue_name_fails_at_once() -> None:
    kube, run = make()
    kube.refuse["workloads"] = NotFoundError(
        "the server could not find the requested resource", status=404
    )
    with pytest.raises(QueueError) as raised:
        run.run()
    assert "this cluster does not run Kueue" in str(raised.value)
    assert kube.clock.t - 1000 < 2


def test_unreadable_workloads_fall_back_to_the_plain_queued_phase(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make(queue_timeout=60)
    kube.refuse["workloads"] = ForbiddenError(
        "workloads is forbidden", status=403, reason="Forbidden"
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    with pytest.raises(DeadlineExceededError):
        run.run()
    assert caplog.text.count("cannot read Kueue's Workloads") == 1
    assert "queued in LocalQueue gpus (Job suspended)" in caplog.text


def test_a_preempted_step_is_queued_again_and_completes_when_readmitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make()
    local_queue(kube)
    script(
        kube,
        (0.2, lambda j: pending(kube, j)),
        (1, lambda j: admit(kube, j)),
        (2, lambda j: run_pod(kube, j)),
        (10, lambda j: preempt(kube, j)),
        (50, lambda j: admit(kube, j)),
        (51, lambda j: run_pod(kube, j, "fghij")),
        (60, lambda j: finish(kube, j, "fghij")),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    text = caplog.text
    assert "preempted by Kueue (Preempted: Preempted to accommodate a workload" in text
    assert "queued again" in text
    assert text.count("admitted by Kueue") == 2
    assert "succeeded" in text


def test_no_workload_for_long_asks_whether_kueue_runs(caplog: pytest.LogCaptureFixture) -> None:
    kube, run = make(queue_timeout=90)
    local_queue(kube)
    caplog.set_level(logging.INFO, "k8s_step_operator")
    with pytest.raises(DeadlineExceededError) as raised:
        run.run()
    assert "is Kueue's controller running?" in str(raised.value)


def test_read_workload_reads_both_api_versions_fields() -> None:
    wl = {
        "metadata": {"name": "w"},
        "status": {
            "admission": ADMISSION,
            "conditions": [{"type": "Admitted", "status": "True", "reason": "Admitted"}],
        },
    }
    state = read_workload(wl)
    assert state.admitted and state.cluster_queue == "team"
    assert state.flavor_text == "nvidia.com/gpu=h100"
    assert not read_workload({"metadata": {"name": "w"}}).admitted
