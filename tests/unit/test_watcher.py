"""The shared namespace watcher against the in-memory API: lists, watches, 410, reconnects,
refusals per watch, the safety re-list, the scoping of its watches to its launcher's Jobs (and
the set-based watches of other launchers' Jobs and of Workloads), events read on demand, and the
registry that shares watchers.

The watcher runs its real threads; time is a fake clock that the test moves. Waiting for a
thread to react uses ``Event.wait`` with a generous bound, which returns as soon as it reacts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from k8s_step_operator import ApiError, ForbiddenError
from k8s_step_operator._runner.step_events import FailedCreates, StepEvents
from k8s_step_operator._runner.watcher import (
    READ_SLACK,
    SERVER_TIMEOUT,
    SET_SIZE,
    NamespaceWatcher,
    WatcherRegistry,
    with_launcher,
)

from .fakes import FakeClock, FakeKube

NS = "ml"
REACT = 15.0  # seconds a thread may take to react; the tests never wait that long when it works
ME, OTHER = "me", "other"
LAUNCHER = "k8s-step-operator.io/launcher"


def job(name: str, launcher: str = ME, **labels: str) -> dict[str, Any]:
    """A Job of ours as the runner submits it: labelled, and its pod template too."""
    return with_launcher(
        {
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": "k8s-step-operator",
                    "k8s-step-operator.io/step-run-id": f"sr-{name}",
                    **labels,
                },
            },
            "spec": {"template": {"metadata": {"labels": {}}, "spec": {}}},
        },
        launcher,
    )


def until(check: Callable[[], bool]) -> bool:
    done = threading.Event()
    for _ in range(int(REACT / 0.005)):
        if check():
            return True
        done.wait(0.005)
    return check()


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(FakeClock())


@pytest.fixture
def watcher(kube: FakeKube) -> Iterator[NamespaceWatcher]:
    w = NamespaceWatcher(kube, NS, clock=kube.clock, launcher=ME)
    w.start()
    assert w.wait_synced(REACT)
    yield w
    w.stop()


def test_lists_then_watches_its_launchers_jobs_and_pods_from_the_lists_version(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    assert until(lambda: kube.count("watch") == 2)
    lists = {c.args[0]: c for c in kube.calls if c.method == "list"}
    watches = {c.args[0]: c for c in kube.calls if c.method == "watch"}
    # Two connections, scoped to this launcher; no watch of the namespace's events.
    assert set(lists) == set(watches) == {"jobs", "pods"}
    assert watches["jobs"].args[3] == "100"
    assert watches["pods"].args[2] == f"{LAUNCHER}={ME}"
    assert watches["jobs"].args[2] == (
        f"app.kubernetes.io/managed-by=k8s-step-operator,{LAUNCHER}={ME}"
    )


def test_without_a_launcher_it_watches_every_job_of_ours_and_every_jobs_pods(
    kube: FakeKube,
) -> None:
    w = NamespaceWatcher(kube, NS, clock=kube.clock)
    w.start()
    try:
        assert until(lambda: kube.count("watch") == 2)
        watches = {c.args[0]: c.args[2] for c in kube.calls if c.method == "watch"}
        assert watches == {
            "jobs": "app.kubernetes.io/managed-by=k8s-step-operator",
            "pods": "batch.kubernetes.io/controller-uid",
        }
    finally:
        w.stop()


def test_a_silent_connection_is_given_up_within_a_minute(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    assert until(lambda: kube.count("watch") == 2)
    for call in (c for c in kube.calls if c.method == "watch"):
        assert call.kwargs["timeout_seconds"] == SERVER_TIMEOUT
        assert call.kwargs["read_timeout"] == SERVER_TIMEOUT + READ_SLACK <= 60


def test_a_change_reaches_the_cache_and_wakes_only_its_step(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    mine, other = watcher.subscribe("a"), watcher.subscribe("b")
    mine.changed.clear()
    other.changed.clear()
    kube.put("jobs", NS, job("a"))
    assert mine.changed.wait(REACT)
    assert not other.changed.is_set()
    cached = watcher.job("a")
    assert cached is not None and cached["metadata"]["resourceVersion"] == str(kube.rv)


def test_jobs_and_pods_of_other_launchers_are_not_received(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    kube.put("jobs", NS, {"metadata": {"name": "theirs", "labels": {}}, "spec": {}})
    other = kube.put("jobs", NS, job("other-pipeline", launcher=OTHER))
    kube.set_pod(other)
    ours = kube.put("jobs", NS, job("ours"))
    kube.set_pod(ours)
    assert until(lambda: watcher.job("ours") is not None)
    assert until(lambda: len(watcher.pods_of(ours["metadata"]["uid"])) == 1)
    assert watcher.job("theirs") is None and watcher.job("other-pipeline") is None
    assert watcher.pods_of(other["metadata"]["uid"]) == []
    # Nothing of the other launcher's even reached this watcher's connections.
    sent = [line for stream in kube.streams for line in stream.sent]
    assert sent and not any("other-pipeline" in line or "theirs" in line for line in sent)


def test_the_launcher_labels_the_job_and_its_pod_template() -> None:
    labelled = with_launcher({"metadata": {"name": "a"}, "spec": {"template": {}}}, ME)
    assert labelled["metadata"]["labels"] == {LAUNCHER: ME}
    assert labelled["spec"]["template"]["metadata"]["labels"] == {LAUNCHER: ME}


def test_another_launchers_job_is_watched_by_set_based_selectors_while_followed(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    theirs = kube.put("jobs", NS, job("theirs", launcher=OTHER))
    kube.set_pod(theirs)
    uid = theirs["metadata"]["uid"]
    assert until(lambda: kube.count("watch") == 2)
    sub = watcher.subscribe("theirs", theirs)
    assert until(lambda: kube.count("watch") == 4)
    assert until(lambda: watcher.job("theirs") is not None and len(watcher.pods_of(uid)) == 1)
    selectors = {c.args[0]: c.args[2] for c in kube.calls[-4:] if c.method == "watch"}
    assert selectors == {
        "jobs": "app.kubernetes.io/managed-by=k8s-step-operator,"
        "k8s-step-operator.io/step-run-id in (sr-theirs)",
        "pods": f"batch.kubernetes.io/controller-uid in ({uid})",
    }
    # Its changes wake the step, as for a Job of this launcher.
    sub.changed.clear()
    kube.set_pod(theirs, phase="Running")
    assert sub.changed.wait(REACT)
    # Once nobody follows it, its watches stop and its objects leave the cache.
    watcher.unsubscribe(sub)
    assert until(lambda: len(watcher.states()) == 2)
    assert watcher.job("theirs") is None and watcher.pods_of(uid) == []


def test_a_set_that_grows_relists_with_the_new_member_and_holds_a_hundred_per_watch(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    assert until(lambda: kube.count("watch") == 2)
    first = kube.put("jobs", NS, job("a", launcher=OTHER))
    watcher.subscribe("a", first)
    assert until(lambda: watcher.job("a") is not None)
    second = kube.put("jobs", NS, job("b", launcher=OTHER))
    watcher.subscribe("b", second)
    assert until(lambda: watcher.job("b") is not None)
    job_lists = [c.args[2] for c in kube.calls if c.method == "list" and c.args[0] == "jobs"]
    assert job_lists[-1].endswith("step-run-id in (sr-a,sr-b)")
    for i in range(SET_SIZE):
        watcher.subscribe(f"n{i}", kube.put("jobs", NS, job(f"n{i}", launcher=OTHER)))
    assert until(lambda: all(watcher.job(f"n{i}") is not None for i in range(SET_SIZE)))
    # 102 Jobs of another launcher: two watches of Jobs and two of pods, besides its own two.
    assert len(watcher.states()) == 6
    assert watcher.failure is None


def test_a_queued_jobs_workload_is_watched_by_its_jobs_uid(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    queued = kube.put("jobs", NS, job("q", **{"kueue.x-k8s.io/queue-name": "gpu"}))
    uid = queued["metadata"]["uid"]
    kube.put(
        "workloads",
        NS,
        {"metadata": {"name": "job-q-1", "labels": {"kueue.x-k8s.io/job-uid": uid}}},
    )
    kube.put(
        "workloads",
        NS,
        {"metadata": {"name": "job-x-1", "labels": {"kueue.x-k8s.io/job-uid": "not-ours"}}},
    )
    watcher.subscribe("q", queued)
    assert until(lambda: watcher.workload_of(uid) is not None)
    assert until(lambda: kube.count("watch") == 3)
    assert watcher.workload_of("not-ours") is None
    lists = [c.args[2] for c in kube.calls if c.method == "list" and c.args[0] == "workloads"]
    assert lists == [f"kueue.x-k8s.io/job-uid in ({uid})"]


def test_expired_version_410_relists(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 2)
    lists = kube.count("list")
    kube.put("jobs", NS, job("a"))
    assert until(lambda: watcher.job("a") is not None)
    # The server forgets old versions and ends the watches: resuming gets 410, then re-lists.
    kube.put("jobs", NS, job("b"))
    kube.compacted = kube.rv + 1000
    kube.end_watches()
    assert until(lambda: kube.count("list") >= lists + 2)
    assert until(lambda: watcher.job("b") is not None)


def test_a_set_based_watch_relists_its_set_after_410(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    theirs = kube.put("jobs", NS, job("theirs", launcher=OTHER))
    watcher.subscribe("theirs", theirs)
    assert until(lambda: kube.count("watch") == 4)
    before = len(kube.calls)
    kube.compacted = kube.rv + 1000
    kube.end_watches()

    def relisted() -> set[str]:
        return {c.args[2] for c in kube.calls[before:] if c.method == "list"}

    assert until(lambda: any(s.endswith("in (sr-theirs)") for s in relisted()))
    assert watcher.job("theirs") is not None


def test_error_event_410_relists(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 2)
    lists = kube.count("list")
    stream = next(s for s in kube.streams if s.kind == "pods")
    stream.push('{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}')
    assert until(lambda: kube.count("list") == lists + 1)
    assert [c.args[0] for c in kube.calls if c.method == "list"][-1] == "pods"


def test_a_watch_ended_by_the_server_resumes_from_the_last_version(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    kube.put("jobs", NS, job("a"))
    assert until(lambda: watcher.job("a") is not None)
    seen = str(kube.rv)
    kube.end_watches()
    assert until(lambda: kube.count("watch") == 4)
    resumed = [c for c in kube.calls if c.method == "watch" and c.args[0] == "jobs"][-1]
    assert resumed.args[3] == seen
    assert kube.count("list") == 2  # no re-list was needed


def test_bookmarks_move_the_resume_point(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 2)
    stream = next(s for s in kube.streams if s.kind == "pods")
    stream.push('{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "4242"}}}')
    kube.compacted = 0
    assert until(lambda: watcher._kinds["pods"].resource_version == "4242")
    stream.end()
    assert until(
        lambda: (
            [c for c in kube.calls if c.method == "watch" and c.args[0] == "pods"][-1].args[3]
            == "4242"
        )
    )


def ticked(kube: FakeKube, seconds: float) -> bool:
    """Move the fake clock on (for use inside a polled condition); always true."""
    kube.clock.advance(seconds)
    return True


def test_connection_failures_back_off_and_resume(kube: FakeKube) -> None:
    kube.fail("watch", ApiError("connection refused", status=0, reason="ConnectionError"), times=2)
    w = NamespaceWatcher(kube, NS, clock=kube.clock, launcher=ME)
    w.start()
    try:
        assert w.wait_synced(REACT)
        assert until(lambda: kube.count("watch") >= 2)
        # Past any back-off. Time moves on at every check: a watch thread that had not begun its
        # back-off wait when time first moved (a loaded machine) still wakes.
        assert until(lambda: ticked(kube, 10) and kube.count("watch") >= 4)
        assert w.failure is None
    finally:
        w.stop()


def test_a_refusal_of_one_kind_is_not_cleared_by_another_kinds_relist(kube: FakeKube) -> None:
    forbidden = ForbiddenError("pods is forbidden", status=403, reason="Forbidden")
    kube.refuse["pods"] = forbidden
    w = NamespaceWatcher(kube, NS, clock=kube.clock, launcher=ME)
    w.start()
    try:
        assert until(lambda: w.failure is not None)
        assert w.failure is forbidden
        # Jobs keep listing and watching: the refusal of pods stays.
        kube.compacted = kube.rv + 1000
        lists = kube.count("list")
        kube.end_watches()
        relisted = lambda: {c.args[0] for c in kube.calls[lists:] if c.method == "list"}  # noqa: E731
        assert until(lambda: "jobs" in relisted())
        assert w.failure is forbidden
        # Once pods may be read again, the refusal goes.
        del kube.refuse["pods"]
        assert until(lambda: ticked(kube, 10) and w.failure is None)
    finally:
        w.stop()


def test_the_safety_relist_runs_at_its_interval(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 2)
    watcher.safety_interval = 60
    jobs_lists = lambda: sum(1 for c in kube.calls if c.method == "list" and c.args[0] == "jobs")  # noqa: E731
    before = jobs_lists()
    kube.clock.advance(30)
    assert jobs_lists() == before
    kube.clock.advance(35)
    assert until(lambda: jobs_lists() == before + 1)


def test_registry_shares_per_access_object_and_namespace() -> None:
    registry = WatcherRegistry(linger=0)
    a, b = FakeKube(FakeClock()), FakeKube(FakeClock())
    w1 = registry.acquire(a, NS, clock=a.clock)
    w2 = registry.acquire(a, NS, clock=a.clock)
    w3 = registry.acquire(b, NS, clock=b.clock)
    w4 = registry.acquire(a, "other", clock=a.clock)
    try:
        assert w1 is w2
        assert w1 is not w3 and w1 is not w4
        registry.release(w1)
        assert not w1.stopped  # one user left
        registry.release(w2)
        assert w1.stopped
        assert registry.acquire(a, NS, clock=a.clock) is not w1
    finally:
        registry.close()
    assert w3.stopped and w4.stopped
    assert registry.watchers() == []


def test_registry_close_stops_one_access_objects_watchers_only() -> None:
    registry = WatcherRegistry(linger=3600)
    a, b = FakeKube(FakeClock()), FakeKube(FakeClock())
    wa, wb = registry.acquire(a, NS, clock=a.clock), registry.acquire(b, NS, clock=b.clock)
    registry.release(wa)  # lingers
    assert not wa.stopped
    registry.close(a)
    assert wa.stopped and not wb.stopped
    assert registry.watchers() == [wb]
    registry.close()


def test_shared_watcher_relists_at_the_shortest_interval_asked() -> None:
    registry = WatcherRegistry(linger=0)
    kube = FakeKube(FakeClock())
    w = registry.acquire(kube, NS, clock=kube.clock, safety_interval=60)
    registry.acquire(kube, NS, clock=kube.clock, safety_interval=15)
    assert w.safety_interval == 15
    registry.close()


def test_registry_labels_its_watchers_with_one_launcher_of_its_own() -> None:
    a, b = WatcherRegistry(linger=0), WatcherRegistry(linger=0)
    assert a.launcher != b.launcher
    kube = FakeKube(FakeClock())
    try:
        assert a.acquire(kube, NS, clock=kube.clock).launcher == a.launcher
    finally:
        a.close()


# -- events, read on demand --------------------------------------------------------------------


def test_a_pods_events_are_read_by_its_name_only_when_due(kube: FakeKube) -> None:
    kube.add_event(NS, "Pod", "p-1", "FailedScheduling", "0/3 nodes are available")
    kube.add_event(NS, "Pod", "someone-else", "FailedScheduling", "not ours")
    events = StepEvents(kube, NS, "j", clock=kube.clock)
    # A step that has just started waiting reads nothing (most pass by in milliseconds).
    assert not events.refresh("p-1", waited=0.2)
    assert kube.count("list_events") == 0
    # A second of waiting: one list, of that pod's events only.
    assert events.refresh("p-1", waited=1.0)
    assert [e["message"] for e in events.events(["j", "p-1"])] == ["0/3 nodes are available"]
    assert [c.args for c in kube.calls if c.method == "list_events"] == [
        (NS, "involvedObject.name=p-1")
    ]
    # Not again within the interval, which grows with the wait up to ten seconds.
    assert not events.refresh("p-1", waited=1.5)
    kube.clock.advance(1.0)
    events.refresh("p-1", waited=2.5)
    assert kube.count("list_events") == 2
    assert StepEvents.interval(60) == 6.0 and StepEvents.interval(3600) == 10.0


def test_a_problem_reads_a_pods_events_at_once(kube: FakeKube) -> None:
    events = StepEvents(kube, NS, "j", clock=kube.clock)
    events.refresh("p-1", waited=0.0, at_once=True)
    assert kube.count("list_events") == 1


def test_one_reader_of_failed_creates_serves_every_waiting_step(kube: FakeKube) -> None:
    kube.add_event(NS, "Job", "a", "FailedCreate", "exceeded quota")
    kube.add_event(NS, "Job", "a", "SuccessfulCreate", "created pod")
    kube.add_event(NS, "Pod", "a-x", "FailedCreate", "a pod's, not a Job's")
    woken: list[str] = []
    shared = FailedCreates(kube, NS, clock=kube.clock, notify=woken.append)
    steps = [StepEvents(kube, NS, name, shared, clock=kube.clock) for name in ("a", "b", "c")]
    # Steps waiting for their pods say so and read nothing themselves.
    for step in steps:
        assert not step.refresh(step.job, waited=0.0)
    assert shared.waiting == 3 and shared.wake.is_set()
    assert shared.tick() == 1.0 and kube.count("list_events") == 0
    # A second on, one list for all of them, which wakes the step whose Job it concerns.
    kube.clock.advance(1.0)
    assert shared.tick() == 1.0
    assert [c.args for c in kube.calls if c.method == "list_events"] == [
        (NS, "involvedObject.kind=Job,reason=FailedCreate")
    ]
    assert woken == ["a"]
    assert [e["message"] for e in steps[0].events(["a", "a-x"])] == ["exceeded quota"]
    assert steps[1].events(["b"]) == []
    # Nothing new: nobody is woken; a new refusal wakes its step only.
    kube.clock.advance(1.0)
    shared.tick()
    assert woken == ["a"]
    kube.add_event(NS, "Job", "b", "FailedCreate", "forbidden: violates PodSecurity")
    kube.clock.advance(1.0)
    shared.tick()
    assert woken == ["a", "b"] and kube.count("list_events") == 3
    # The interval grows with the newest waiter's wait, up to ten seconds.
    kube.clock.advance(100.0)
    shared.tick()
    assert shared.tick() == 10.0
    # When no step waits any more, no list is due however long it is.
    for step in steps:
        step.done_waiting()
    assert shared.tick() is None
    kube.clock.advance(3600.0)
    assert shared.tick() is None and kube.count("list_events") == 4


def test_a_new_waiter_is_read_for_a_second_after_it_began_to_wait(kube: FakeKube) -> None:
    shared = FailedCreates(kube, NS, clock=kube.clock)
    shared.wait_for("old", kube.clock.t)
    kube.clock.advance(100.0)
    shared.tick()
    assert shared.tick() == 10.0
    shared.wait_for("new", kube.clock.t)
    assert shared.tick() == 1.0
    kube.clock.advance(1.0)
    shared.tick()
    assert kube.count("list_events") == 2


def test_a_problem_reads_the_jobs_refusals_at_once(kube: FakeKube) -> None:
    kube.add_event(NS, "Job", "j", "FailedCreate", "exceeded quota")
    events = StepEvents(kube, NS, "j", clock=kube.clock)
    assert events.refresh("j", waited=0.0, at_once=True)
    assert [e["message"] for e in events.events(["j"])] == ["exceeded quota"]
    # Once: later looks leave it to the shared reader.
    kube.clock.advance(5.0)
    assert not events.refresh("j", waited=5.0, at_once=True)
    assert kube.count("list_events") == 1


def test_refused_events_are_said_once_and_not_asked_again(
    kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    kube.refuse["events"] = ForbiddenError("events is forbidden", status=403, reason="Forbidden")
    events = StepEvents(kube, NS, "j", clock=kube.clock)
    assert not events.refresh("p-1", waited=5.0)
    kube.clock.advance(60)
    assert not events.refresh("p-1", waited=65.0)
    assert not events.refresh("j", waited=65.0)
    assert events.failed_creates.tick() is None  # refused: none due, ever
    kube.clock.advance(60)
    assert not events.refresh("j", waited=125.0)
    assert events.failed_creates.tick() is None
    assert kube.count("list_events") == 2  # once for the pods, once for the Jobs
    assert caplog.text.count("cannot read events") == 2


def test_the_caches_keep_what_their_readers_read_with_shared_keys(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    ours = job("ours")
    ours["spec"]["template"]["spec"] = {"containers": [{"name": "step", "image": "img:1"}]}
    ours["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    created = kube.put("jobs", NS, ours)
    kube.set_pod(created, spec={"nodeName": "gpu-0", "hostname": "h"}, phase="Running")
    other = kube.put("jobs", NS, job("other"))
    kube.set_pod(other)
    uid = created["metadata"]["uid"]
    other_uid = other["metadata"]["uid"]
    assert until(lambda: len(watcher.pods_of(uid)) == len(watcher.pods_of(other_uid)) == 1)
    cached, (pod,) = watcher.job("ours"), watcher.pods_of(uid)
    assert cached is not None
    # A Job without its pod template, a pod's spec without its containers; the rest is there.
    assert "template" not in cached["spec"] and "managedFields" not in cached["metadata"]
    assert pod["spec"] == {
        "nodeName": "gpu-0",
        "hostname": "h",
        "containers": [{"name": "step", "image": "img:1"}],
    }
    assert pod["status"]["phase"] == "Running"
    # Thousands of cached objects share one copy of each key.
    (other_pod,) = watcher.pods_of(other_uid)
    key = next(k for k in pod["metadata"] if k == "ownerReferences")
    assert any(k is key for k in other_pod["metadata"])


def test_lists_are_read_in_pages(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("k8s_step_operator._runner.watcher.LIST_PAGE", 2)
    for i in range(5):
        kube.put("jobs", NS, job(f"j{i}"))
    w = NamespaceWatcher(kube, NS, clock=kube.clock, launcher=ME)
    w.start()
    try:
        assert w.wait_synced(REACT)
        assert all(w.job(f"j{i}") is not None for i in range(5))
        pages = [c for c in kube.calls if c.method == "list" and c.args[0] == "jobs"]
        assert [c.kwargs["limit"] for c in pages] == [2, 2, 2]
        assert [bool(c.kwargs["continue_token"]) for c in pages] == [False, True, True]
        watch = next(c for c in kube.calls if c.method == "watch" and c.args[0] == "jobs")
        assert watch.args[3] == str(kube.rv)  # from the snapshot the pages were served from
    finally:
        w.stop()
