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


def test_a_cluster_queue_that_does_not_exist_fails_after_the_grace() -> None:
    kube, run = make()
    kube.put("localqueues", NS, {"metadata": {"name": "gpus"}, "spec": {"clusterQueue": "gone"}})
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue gone is inactive")))
    with pytest.raises(QueueError) as raised:
        run.run()
    assert "Kueue cannot admit it: ClusterQueue gone does not exist" in str(raised.value)
    assert 30 <= kube.clock.t - 1000 < 33  # missing_config_grace: it may be being applied


def test_kueues_other_inadmissible_reasons_fail_at_once() -> None:
    kube, run = make()
    local_queue(kube)
    cluster_queue(kube)
    message = "Workload namespace doesn't match ClusterQueue selector"
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", message)))
    with pytest.raises(QueueError) as raised:
        run.run()
    assert f"Kueue cannot admit it: {message}" in str(raised.value)
    assert kube.clock.t - 1000 < 2


# -- a request no quota can hold, a paused queue, a broken queue -------------------------------

NEVER = (
    "couldn't assign flavors to pod set main: insufficient quota for nvidia.com/gpu in flavor "
    "h100, previously considered podsets requests (0) + current podset request (16) > maximum "
    "capacity (8)"
)


def cluster_queue(kube: FakeKube, *conditions: dict[str, str], **spec: Any) -> None:
    managed = []
    if spec.get("stopPolicy"):
        managed = [
            {"manager": "k8sso-setup", "operation": "Apply", "time": "2026-12-01T08:00:00Z",
             "fieldsV1": {"f:spec": {"f:resourceGroups": {}}}},
            {"manager": "admin-maintenance", "operation": "Update",
             "time": "2026-12-05T18:21:10Z", "fieldsV1": {"f:spec": {"f:stopPolicy": {}}}},
        ]  # fmt: skip
    kube.put(
        "clusterqueues",
        "",
        {
            "metadata": {"name": "team", "managedFields": managed},
            "spec": {"stopPolicy": "None", **spec},
            "status": {"conditions": list(conditions) or [ACTIVE]},
        },
    )


ACTIVE = {"type": "Active", "status": "True", "reason": "Ready", "message": "Can admit"}
STOPPED = {
    "type": "Active",
    "status": "False",
    "reason": "Stopped",
    "message": "Can't admit new workloads: is stopped.",
}
NO_FLAVOR = {
    "type": "Active",
    "status": "False",
    "reason": "FlavorNotFound",
    "message": "Can't admit new workloads: references missing ResourceFlavor(s): b200.",
}


def test_a_request_above_what_the_queue_can_ever_lend_fails_at_once_in_kueues_words() -> None:
    # It used to say "queued" forever: no step finishing frees 8 more GPUs of an 8-GPU queue.
    kube, run = make()
    local_queue(kube)
    script(kube, (0.5, lambda j: pending(kube, j, "Pending", NEVER)))
    with pytest.raises(QueueError) as raised:
        run.run()
    message = str(raised.value)
    assert (
        "Kueue can never admit it: nvidia.com/gpu: 16 requested, ClusterQueue team can lend at "
        "most 8 (flavor h100)"
    ) in message
    assert "> maximum capacity (8)" in message  # and Kueue's own words
    assert kube.clock.t - 1000 < 2
    assert kube.job(NS, run.name) is None


def test_a_request_another_flavor_may_hold_later_keeps_waiting() -> None:
    kube, run = make(queue_timeout=60)
    local_queue(kube)
    either = f"{NEVER}, insufficient unused quota for nvidia.com/gpu in flavor a100, 2 more needed"
    script(kube, (0.5, lambda j: pending(kube, j, "Pending", either)))
    with pytest.raises(DeadlineExceededError) as raised:
        run.run()
    assert "still queued after 60s (queue_timeout)" in str(raised.value)


@pytest.mark.parametrize("which", ["ClusterQueue", "LocalQueue"])
def test_a_paused_queue_waits_saying_who_stopped_it_then_runs_when_it_resumes(
    which: str, caplog: pytest.LogCaptureFixture
) -> None:
    # It used to fail at once ("ClusterQueue ... is inactive") and delete the Job.
    kube, run = make()
    inactive = f"{which} {'team' if which == 'ClusterQueue' else 'gpus'} is inactive"
    if which == "ClusterQueue":
        local_queue(kube)
        cluster_queue(kube, STOPPED, stopPolicy="Hold")
    else:
        kube.put(
            "localqueues",
            NS,
            {
                "metadata": {"name": "gpus"},
                "spec": {"clusterQueue": "team", "stopPolicy": "Hold"},
                "status": {
                    "conditions": [
                        {"type": "Active", "status": "False", "reason": "Stopped",
                         "message": "LocalQueue is stopped"}
                    ]
                },
            },
        )  # fmt: skip
        cluster_queue(kube)
    script(
        kube,
        (0.5, lambda j: pending(kube, j, "Inadmissible", inactive)),
        (600, lambda j: admit(kube, j)),
        (601, lambda j: run_pod(kube, j)),
        (605, lambda j: finish(kube, j)),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    name = "ClusterQueue team" if which == "ClusterQueue" else "LocalQueue gpus"
    assert f"{name} is stopped (spec.stopPolicy Hold" in caplog.text
    if which == "ClusterQueue":
        assert "set by admin-maintenance at 2026-12-05T18:21:10Z" in caplog.text
    assert "Kueue keeps the step and admits it when the queue resumes" in caplog.text


def test_a_paused_queue_is_bounded_by_queue_timeout() -> None:
    kube, run = make(queue_timeout=120)
    local_queue(kube)
    cluster_queue(kube, STOPPED, stopPolicy="Hold")
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue team is inactive")))
    with pytest.raises(DeadlineExceededError) as raised:
        run.run()
    assert "still queued after 120s (queue_timeout)" in str(raised.value)
    assert "ClusterQueue team is stopped (spec.stopPolicy Hold" in str(raised.value)


def test_a_queue_inactive_for_its_configuration_names_it_and_fails_after_the_grace() -> None:
    kube, run = make(queue_timeout=600)
    # Kueue marks the LocalQueue inactive too: the ClusterQueue says why.
    kube.put(
        "localqueues",
        NS,
        {
            "metadata": {"name": "gpus"},
            "spec": {"clusterQueue": "team"},
            "status": {
                "conditions": [
                    {
                        "type": "Active",
                        "status": "False",
                        "reason": "ClusterQueueIsInactive",
                        "message": "Can't submit new workloads to clusterQueue",
                    }
                ]
            },
        },
    )
    cluster_queue(kube, NO_FLAVOR)
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue team is inactive")))
    with pytest.raises(QueueError) as raised:
        run.run()
    assert (
        "ClusterQueue team is inactive (FlavorNotFound): Can't admit new workloads: references "
        "missing ResourceFlavor(s): b200."
    ) in str(raised.value)
    assert 30 <= kube.clock.t - 1000 < 33


def test_a_queue_fixed_within_the_grace_goes_on() -> None:
    kube, run = make()
    local_queue(kube)
    cluster_queue(kube, NO_FLAVOR)
    script(
        kube,
        (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue team is inactive")),
        (10, lambda j: cluster_queue(kube)),
        (10.5, lambda j: admit(kube, j)),
        (11, lambda j: run_pod(kube, j)),
        (12, lambda j: finish(kube, j)),
    )
    run.run()


def test_an_unreadable_queue_status_waits_for_the_queue_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, run = make(queue_timeout=90)
    local_queue(kube)
    kube.refuse["clusterqueues"] = ForbiddenError("forbidden", status=403, reason="Forbidden")
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "ClusterQueue team is inactive")))
    with pytest.raises(DeadlineExceededError) as raised:
        run.run()
    assert "the queue's status is not readable" in str(raised.value)


def test_kueues_stopped_local_queue_waits_though_the_queue_is_not_readable() -> None:
    # Kueue 0.17 says "LocalQueue gpu is stopped" for a LocalQueue on hold: a pause, whatever
    # the identity may read (it used to fail at once when the LocalQueue was not readable).
    kube, run = make(queue_timeout=90)
    kube.refuse["localqueues"] = ForbiddenError("forbidden", status=403, reason="Forbidden")
    script(kube, (0.5, lambda j: pending(kube, j, "Inadmissible", "LocalQueue gpu is stopped")))
    with pytest.raises(DeadlineExceededError) as raised:
        run.run()
    message = str(raised.value)
    assert "LocalQueue gpu is stopped: Kueue keeps the step and admits it" in message, message
    assert kube.clock.t - 1000 >= 90


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


def test_never_admissible_reads_kueues_words_per_resource() -> None:
    from k8s_step_operator._runner.kueue import never_admissible

    assert never_admissible(NEVER, "team") == (
        "nvidia.com/gpu: 16 requested, ClusterQueue team can lend at most 8 (flavor h100)"
    )
    older = (
        "couldn't assign flavors to pod set main: insufficient quota for memory in flavor "
        "default, request > maximum capacity (64Gi > 32Gi)"
    )
    assert never_admissible(older) == (
        "memory: 64Gi requested, the ClusterQueue can lend at most 32Gi (flavor default)"
    )
    uncovered = (
        "couldn't assign flavors to pod set main: resource amd.com/gpu unavailable in ClusterQueue"
    )
    assert (
        never_admissible(uncovered, "team") == "amd.com/gpu: ClusterQueue team has no quota for it"
    )
    assert never_admissible(QUOTA) == ""
    assert never_admissible("") == ""


def test_read_queue_state_says_who_stopped_it() -> None:
    from k8s_step_operator._runner.kueue import read_queue_state

    kube = FakeKube(FakeClock())
    cluster_queue(kube, STOPPED, stopPolicy="HoldAndDrain")
    state = read_queue_state("ClusterQueue", kube.store["clusterqueues"][("", "team")])
    assert state.stopped and not state.misconfigured
    assert state.words() == (
        "ClusterQueue team is stopped (spec.stopPolicy HoldAndDrain, set by admin-maintenance at "
        "2026-12-05T18:21:10Z)"
    )
    cluster_queue(kube, NO_FLAVOR)
    state = read_queue_state("ClusterQueue", kube.store["clusterqueues"][("", "team")])
    assert state.misconfigured and state.reason == "FlavorNotFound"
    cluster_queue(kube)
    state = read_queue_state("ClusterQueue", kube.store["clusterqueues"][("", "team")])
    assert state.active and not state.stopped and not state.misconfigured
