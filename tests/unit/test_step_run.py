"""A step followed from submission to its end against the in-memory API, on a fake clock.

Every phase bound is crossed in fake time: a 600 s pending timeout takes no real time, and the
same scenario always takes the same path.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from k8s_step_operator import (
    AdmissionRejectedError,
    ContainerConfigError,
    DeadlineExceededError,
    DeletedExternallyError,
    ForbiddenError,
    ImageError,
    KubernetesJobStepOperatorSettings,
    NameCollisionError,
    OOMKilledError,
    ResourceSettings,
    ServerUnavailableError,
    StepConfiguration,
    StepFailedError,
    StepRunInfo,
    UnschedulableError,
    build_job,
)
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeClock, FakeKube, SyncWatchers

NS = "ml"
INSUFFICIENT = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
GPU_NODE = {
    "metadata": {"name": "gpu-0", "labels": {"pool": "h100"}},
    "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule", "value": "present"}]},
    "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}},
}


def make(*, gpus: int = 1, step_run_id: str = "sr-1", **overrides: Any) -> tuple[FakeKube, StepRun]:
    clock = FakeClock()
    kube = FakeKube(clock)
    kube.nodes = [GPU_NODE]
    settings = KubernetesJobStepOperatorSettings(
        namespace=NS, image="img:1", stream_logs=False, **overrides
    )
    info = StepRunInfo(
        step_run_id=step_run_id,
        run_id="run-1",
        pipeline_step_name="train",
        config=StepConfiguration(resource_settings=ResourceSettings(gpu_count=gpus)),
    )
    job = build_job(info, ["python", "-m", "train"], {}, settings)
    run = StepRun(
        kube,
        job,
        step=StepIdentity("run-1", "train", step_run_id),
        settings=settings,
        clock=clock,
        watchers=SyncWatchers(kube),
    )
    return kube, run


def count_looks(kube: FakeKube, run: StepRun) -> list[float]:
    """The fake seconds since the start at which the step looks at the caches, as it runs."""
    looks: list[float] = []
    look = run._look

    def counted(*args: Any) -> Any:
        looks.append(kube.clock.t - 1000)
        return look(*args)

    run._look = counted  # type: ignore[method-assign]
    return looks


def running(kube: FakeKube, job: dict[str, Any]) -> None:
    kube.set_pod(
        job,
        spec={"nodeName": "gpu-0"},
        phase="Running",
        containerStatuses=[{"name": "step", "state": {"running": {}}}],
    )


def terminated(
    kube: FakeKube, job: dict[str, Any], code: int, reason: str = "Error", message: str = ""
) -> None:
    kube.set_pod(
        job,
        phase="Failed" if code else "Succeeded",
        containerStatuses=[
            {
                "name": "step",
                "state": {"terminated": {"exitCode": code, "reason": reason, "message": message}},
            }
        ],
    )


def script(kube: FakeKube, *steps: tuple[float, Any]) -> None:
    """On create, run each ``(delay, action(job))`` that many fake seconds later."""

    def on_create(job: dict[str, Any]) -> None:
        for delay, action in steps:
            kube.clock.after(
                delay, lambda action=action: action(kube.job(NS, job["metadata"]["name"]))
            )

    kube.on_create = on_create


def test_success_goes_through_the_phases_in_order(caplog: pytest.LogCaptureFixture) -> None:
    kube, run = make()
    script(
        kube,
        (1, lambda j: kube.set_pod(j)),
        (2, lambda j: kube.set_pod(j, spec={"nodeName": "gpu-0"})),
        (3, lambda j: running(kube, j)),
        (10, lambda j: terminated(kube, j, 0, "Completed")),
        (10, lambda j: kube.set_job_condition(j, "Complete")),
    )
    caplog.set_level(logging.INFO, "k8s_step_operator")
    run.run()
    phases = [
        r.getMessage().split(": ", 1)[1].split(" - ")[0]
        for r in caplog.records
        if " - " in r.getMessage()
    ]
    assert phases == ["submitted", "scheduling", "starting", "running"]
    assert "succeeded" in caplog.records[-1].getMessage()
    assert kube.clock.t - 1000 == pytest.approx(10, abs=1.01)


def test_exit_code_and_log_tail_are_reported() -> None:
    kube, run = make()
    kube.logs[(NS, f"{run.name}-abcde", "step")] = ["loading", "Traceback ...", "ValueError: bad"]
    script(
        kube,
        (1, lambda j: running(kube, j)),
        (5, lambda j: terminated(kube, j, 42)),
        (5, lambda j: kube.set_job_condition(j, "Failed", "BackoffLimitExceeded", "failed")),
    )
    with pytest.raises(StepFailedError) as info:
        run.run()
    assert info.value.exit_code == 42
    assert info.value.log_tail[-1] == "ValueError: bad"
    assert info.value.pod == f"{run.name}-abcde"


def test_oom_kill_is_its_own_error() -> None:
    kube, run = make()
    script(
        kube,
        (1, lambda j: running(kube, j)),
        (5, lambda j: terminated(kube, j, 137, "OOMKilled")),
        (5, lambda j: kube.set_job_condition(j, "Failed", "BackoffLimitExceeded")),
    )
    with pytest.raises(OOMKilledError):
        run.run()


@pytest.mark.parametrize("pod_first", [True, False])
def test_deadline_is_always_a_deadline_error(pod_first: bool) -> None:
    """The Job's DeadlineExceeded wins over the killed container's exit code (143)."""
    kube, run = make(active_deadline_seconds=30)
    steps: list[tuple[float, Any]] = [(1, lambda j: running(kube, j))]
    kill = (30, lambda j: terminated(kube, j, 143))
    verdict = (30, lambda j: kube.set_job_condition(j, "Failed", "DeadlineExceeded", "too long"))
    steps += [kill, verdict] if pod_first else [verdict, kill]
    script(kube, *steps)
    with pytest.raises(DeadlineExceededError) as info:
        run.run()
    assert info.value.reason == "DeadlineExceeded"


def unschedulable(kube: FakeKube, job: dict[str, Any], message: str) -> None:
    kube.set_pod(
        job,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    )


def test_a_pod_no_node_can_ever_fit_fails_at_once_and_is_deleted() -> None:
    kube, run = make(gpus=9)
    script(
        kube,
        (
            0.5,
            lambda j: unschedulable(
                kube, j, "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
            ),
        ),
    )
    with pytest.raises(UnschedulableError) as info:
        run.run()
    assert "Insufficient nvidia.com/gpu" in info.value.breakdown
    assert kube.clock.t - 1000 < 2
    assert kube.job(NS, run.name) is None
    assert kube.count("delete_job") == 1


def test_busy_nodes_fail_after_the_pending_timeout() -> None:
    kube, run = make(gpus=8, pending_timeout=600)
    script(
        kube,
        (
            1,
            lambda j: unschedulable(
                kube, j, "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
            ),
        ),
    )
    with pytest.raises(UnschedulableError) as info:
        run.run()
    assert "pending timeout" in str(info.value)
    assert 600 <= kube.clock.t - 1000 <= 603


def test_without_node_access_the_pending_timeout_decides() -> None:
    kube, run = make(gpus=9, pending_timeout=120)
    kube.nodes_forbidden = True
    script(kube, (1, lambda j: unschedulable(kube, j, "0/1 nodes: Insufficient nvidia.com/gpu")))
    with pytest.raises(UnschedulableError):
        run.run()
    assert kube.clock.t - 1000 >= 120


def test_queued_job_is_bounded_by_queue_timeout() -> None:
    kube, run = make(queue_name="gpus", queue_timeout=300)
    kube.put("localqueues", NS, {"metadata": {"name": "gpus"}, "spec": {"clusterQueue": "team"}})
    with pytest.raises(DeadlineExceededError) as info:
        run.run()
    assert "still queued" in str(info.value)
    assert 300 <= kube.clock.t - 1000 <= 303


def waiting(kube: FakeKube, job: dict[str, Any], reason: str, message: str = "") -> None:
    kube.set_pod(
        job,
        spec={"nodeName": "gpu-0"},
        containerStatuses=[
            {"name": "step", "state": {"waiting": {"reason": reason, "message": message}}}
        ],
    )


def test_invalid_image_fails_at_once() -> None:
    kube, run = make()
    script(kube, (1, lambda j: waiting(kube, j, "InvalidImageName", "bad ref")))
    with pytest.raises(ImageError):
        run.run()
    assert kube.clock.t - 1000 < 3


def test_image_pull_backoff_fails_after_its_bound() -> None:
    kube, run = make(image_pull_backoff_timeout=300)
    script(kube, (1, lambda j: waiting(kube, j, "ImagePullBackOff", "pull failed")))
    with pytest.raises(ImageError) as info:
        run.run()
    assert "still failing after" in str(info.value)
    assert 300 <= kube.clock.t - 1000 <= 304


def test_missing_secret_fails_after_its_grace() -> None:
    kube, run = make(missing_config_grace=30)
    script(
        kube, (1, lambda j: waiting(kube, j, "CreateContainerConfigError", 'secret "hf" not found'))
    )
    with pytest.raises(ContainerConfigError):
        run.run()
    assert 30 <= kube.clock.t - 1000 <= 34


def test_quota_rejection_is_reported_from_the_event() -> None:
    kube, run = make()
    script(
        kube,
        (
            1,
            lambda j: kube.add_event(
                NS, "Job", j["metadata"]["name"], "FailedCreate", "exceeded quota: gpu"
            ),
        ),
    )
    with pytest.raises(AdmissionRejectedError) as info:
        run.run()
    assert "exceeded quota" in str(info.value)


def test_the_job_and_its_pods_carry_the_launchers_label() -> None:
    kube, run = make()
    run.submit()
    job = kube.job(NS, run.name)
    assert job is not None
    launcher = run.watchers.launcher
    assert job["metadata"]["labels"]["k8s-step-operator.io/launcher"] == launcher
    template = job["spec"]["template"]["metadata"]["labels"]
    assert template["k8s-step-operator.io/launcher"] == launcher


def test_a_step_that_waits_briefly_reads_no_events() -> None:
    kube, run = make()
    script(
        kube,
        (0.2, lambda j: kube.set_pod(j)),
        (0.4, lambda j: running(kube, j)),
        (5, lambda j: terminated(kube, j, 0, "Completed")),
        (5, lambda j: kube.set_job_condition(j, "Complete")),
    )
    run.run()
    assert kube.count("list_events") == 0


def test_a_step_waiting_for_its_pod_wakes_for_changes_and_heartbeats_only() -> None:
    kube, run = make()
    script(
        kube,
        (300, lambda j: running(kube, j)),
        (305, lambda j: terminated(kube, j, 0, "Completed")),
        (305, lambda j: kube.set_job_condition(j, "Complete")),
    )
    looks = count_looks(kube, run)
    run.run()
    # Five minutes without a pod: the first look, four heartbeats, the pod, its end; the Jobs'
    # refusals were read for it (at a growing interval) without waking it.
    assert len(looks) <= 8, looks
    assert 40 <= kube.count("list_events") <= 60  # 1 s growing to 10 s: ~53 in 300 s


def test_an_unschedulable_pod_reads_its_own_events_and_no_others() -> None:
    kube, run = make(gpus=8, pending_timeout=5)
    script(kube, (0.5, lambda j: unschedulable(kube, j, INSUFFICIENT)))
    kube.add_event(NS, "Pod", "another-step-abcde", "FailedScheduling", "not this step's")
    with pytest.raises(UnschedulableError):
        run.run()
    involved = {c.args[1] for c in kube.calls if c.method == "list_events"}
    assert involved == {f"involvedObject.name={run.name}-abcde"}
    # At most one read a second while it waited (5 s), however often its pod changed.
    assert kube.count("list_events") <= 6


def test_a_restarted_caller_under_another_launcher_follows_the_job_to_its_end() -> None:
    kube, first = make()
    first.submit()  # its caller is gone; the Job carries the old launcher's label
    _, again = make()
    again.api, again.clock = kube, kube.clock
    again.watchers = SyncWatchers(kube)
    assert again.watchers.launcher != first.watchers.launcher
    job = kube.job(NS, first.name)
    assert job is not None
    kube.clock.after(1, lambda: running(kube, job))
    kube.clock.after(3, lambda: terminated(kube, job, 0, "Completed"))
    kube.clock.after(3, lambda: kube.set_job_condition(job, "Complete"))
    again.run()
    assert kube.count("get_job") == 1  # the adoption's; then the watches told every change
    (watcher,) = again.watchers.made
    assert watcher.job(first.name) is None  # released: nobody follows it any more
    watched = {c.args[2] for c in kube.calls if c.method == "list"}
    assert "k8s-step-operator.io/step-run-id in (sr-1)" in " ".join(filter(None, watched))


def test_job_deleted_by_someone_else() -> None:
    kube, run = make()
    script(
        kube,
        (1, lambda j: running(kube, j)),
        (5, lambda j: kube.remove("jobs", NS, j["metadata"]["name"])),
    )
    with pytest.raises(DeletedExternallyError):
        run.run()


def test_a_restarted_caller_adopts_its_own_job() -> None:
    kube, first = make()
    first.submit()
    kube2 = kube
    _, again = make()
    again.api = kube2
    again.watchers = SyncWatchers(kube2)
    again.clock = kube2.clock
    job = again.submit()
    assert job["metadata"]["uid"] == first.uid
    assert kube.count("create_job") == 2


def test_another_attempt_never_adopts_the_job_of_a_failed_one() -> None:
    kube, first = make(step_run_id="attempt-1")
    first.submit()
    _, retry = make(step_run_id="attempt-2")
    assert retry.name != first.name
    # Even under the same name (a name collision), another attempt's Job is not adopted.
    retry.api, retry.name = kube, first.name
    retry.job["metadata"]["name"] = first.name
    with pytest.raises(NameCollisionError):
        retry.submit()


def interrupt() -> None:
    raise KeyboardInterrupt


def test_ctrl_c_deletes_the_job_and_waits_for_its_pods() -> None:
    kube, run = make()
    script(kube, (1, lambda j: running(kube, j)), (20, lambda j: interrupt()))
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert kube.job(NS, run.name) is None
    assert kube.store["pods"] == {}
    (delete,) = [c for c in kube.calls if c.method == "delete_job"]
    assert delete.kwargs["uid"] == run.uid


@pytest.mark.parametrize(
    "error",
    [
        ForbiddenError("jobs is forbidden", status=403, reason="Forbidden"),
        ServerUnavailableError("unavailable", status=503, reason="ServiceUnavailable"),
    ],
)
def test_a_failing_clean_up_never_replaces_the_interrupt(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    kube, run = make()
    kube.fail("delete_job", error)  # type: ignore[arg-type]
    script(kube, (1, lambda j: running(kube, j)), (20, lambda j: interrupt()))
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert any("could not delete Job" in r.getMessage() for r in caplog.records)
    assert "kubectl delete job" in caplog.text


def test_a_refused_read_during_clean_up_still_deletes() -> None:
    kube, run = make()
    run.submit()
    uid = run.uid
    run.uid = ""  # interrupted before create returned
    kube.fail("get_job", ForbiddenError("get forbidden", status=403, reason="Forbidden"))
    run.on_interrupt(terminated=False)
    assert kube.job(NS, run.name) is None
    assert uid


def test_heartbeat_names_phase_elapsed_and_bound(caplog: pytest.LogCaptureFixture) -> None:
    kube, run = make(pending_timeout=600)
    script(kube, (1, lambda j: kube.set_pod(j)), (200, lambda j: interrupt()))
    caplog.set_level(logging.INFO, "k8s_step_operator")
    with pytest.raises(KeyboardInterrupt):
        run.run()
    beats = [r.getMessage() for r in caplog.records if "still scheduling" in r.getMessage()]
    assert beats and "pending_timeout 600s" in beats[0]
    assert "1m00s" in beats[0] or "1m01s" in beats[0]
    assert len(beats) == 3


def test_secret_values_go_into_a_secret_owned_by_the_job() -> None:
    from k8s_step_operator import KubernetesJobStepOperator, KubernetesJobStepOperatorConfig

    kube = FakeKube(FakeClock())
    operator = KubernetesJobStepOperator(
        config=KubernetesJobStepOperatorConfig(namespace=NS, image="img:1", stream_logs=False)
    )
    operator._access = kube  # type: ignore[assignment]
    info = StepRunInfo(step_run_id="sr-9", run_id="run-9", pipeline_step_name="train")
    run = operator.step_run(
        info, ["python"], {"PLAIN": "1"}, secret_environment={"ZENML_STORE_API_TOKEN": "s3cr3t"}
    )
    run.watchers = SyncWatchers(kube)
    run.submit()
    job = kube.job(NS, run.name)
    assert job is not None and "s3cr3t" not in str(job)
    (secret,) = kube.store["secrets"].values()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert base64.b64decode(secret["data"]["ZENML_STORE_API_TOKEN"]) == b"s3cr3t"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "ZENML_STORE_API_TOKEN")
    assert ref["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    # A restarted caller reattaching does not fail on the Secret it made before.
    again = operator.step_run(
        info, ["python"], {"PLAIN": "1"}, secret_environment={"ZENML_STORE_API_TOKEN": "s3cr3t"}
    )
    again.watchers = SyncWatchers(kube)
    assert again.submit()["metadata"]["uid"] == job["metadata"]["uid"]


def test_the_operator_closes_its_watches_and_client() -> None:
    from k8s_step_operator import KubernetesJobStepOperator, KubernetesJobStepOperatorConfig

    kube = FakeKube(FakeClock())
    closed: list[bool] = []
    kube.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    with KubernetesJobStepOperator(
        config=KubernetesJobStepOperatorConfig(namespace=NS, image="img:1")
    ) as operator:
        operator._access = kube  # type: ignore[assignment]
        watchers = operator._watchers
        watcher = watchers.acquire(kube, NS, clock=kube.clock)
        watchers.release(watcher)  # lingers for the next step
        assert not watcher.stopped
    assert watcher.stopped
    assert closed == [True]
    assert watchers.watchers(kube) == []


def test_a_step_in_a_phase_without_bounds_looks_at_its_heartbeats_not_every_second() -> None:
    kube, run = make()
    script(
        kube,
        (1, lambda j: running(kube, j)),
        (300, lambda j: terminated(kube, j, 0, "Completed")),
        (300, lambda j: kube.set_job_condition(j, "Complete")),
    )
    looks = count_looks(kube, run)
    run.run()
    # Running for 5 minutes with nothing changing: a look per heartbeat, not 300.
    assert len([t for t in looks if 2 < t < 299]) <= 6
    assert kube.clock.t - 1000 == pytest.approx(300, abs=1.01)
