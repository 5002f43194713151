"""The shared namespace watcher against the in-memory API: lists, watches, 410, reconnects,
refusals per kind, the safety re-list, and the registry that shares watchers.

The watcher runs its real threads; time is a fake clock that the test moves. Waiting for a
thread to react uses ``Event.wait`` with a generous bound, which returns as soon as it reacts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from k8s_step_operator import ApiError, ForbiddenError
from k8s_step_operator._runner.watcher import (
    READ_SLACK,
    SERVER_TIMEOUT,
    NamespaceWatcher,
    WatcherRegistry,
)

from .fakes import FakeClock, FakeKube

NS = "ml"
REACT = 5.0  # seconds a thread may take to react; the tests never wait that long when it works


def job(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "k8s-step-operator"}},
        "spec": {},
    }


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
    w = NamespaceWatcher(kube, NS, clock=kube.clock)
    w.start()
    assert w.wait_synced(REACT)
    yield w
    w.stop()


def test_lists_then_watches_from_the_lists_version(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    assert until(lambda: kube.count("watch") == 3)
    lists = {c.args[0]: c for c in kube.calls if c.method == "list"}
    watches = {c.args[0]: c for c in kube.calls if c.method == "watch"}
    assert set(lists) == set(watches) == {"jobs", "pods", "events"}
    assert watches["jobs"].args[3] == "100"
    assert watches["pods"].args[2] == "batch.kubernetes.io/controller-uid"
    assert watches["jobs"].args[2] == "app.kubernetes.io/managed-by=k8s-step-operator"


def test_a_silent_connection_is_given_up_within_a_minute(
    kube: FakeKube, watcher: NamespaceWatcher
) -> None:
    assert until(lambda: kube.count("watch") == 3)
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


def test_jobs_of_others_are_not_cached(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    kube.put("jobs", NS, {"metadata": {"name": "theirs", "labels": {}}, "spec": {}})
    kube.put("jobs", NS, job("ours"))
    assert until(lambda: watcher.job("ours") is not None)
    assert watcher.job("theirs") is None


def test_expired_version_410_relists(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 3)
    lists = kube.count("list")
    kube.put("jobs", NS, job("a"))
    assert until(lambda: watcher.job("a") is not None)
    # The server forgets old versions and ends the watches: resuming gets 410, then re-lists.
    kube.put("jobs", NS, job("b"))
    kube.compacted = kube.rv + 1000
    kube.end_watches()
    assert until(lambda: kube.count("list") >= lists + 3)
    assert until(lambda: watcher.job("b") is not None)


def test_error_event_410_relists(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 3)
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
    assert until(lambda: kube.count("watch") == 6)
    resumed = [c for c in kube.calls if c.method == "watch" and c.args[0] == "jobs"][-1]
    assert resumed.args[3] == seen
    assert kube.count("list") == 3  # no re-list was needed


def test_bookmarks_move_the_resume_point(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 3)
    stream = next(s for s in kube.streams if s.kind == "events")
    stream.push('{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "4242"}}}')
    kube.compacted = 0
    assert until(lambda: watcher._kinds["events"].resource_version == "4242")
    stream.end()
    assert until(
        lambda: (
            [c for c in kube.calls if c.method == "watch" and c.args[0] == "events"][-1].args[3]
            == "4242"
        )
    )


def ticked(kube: FakeKube, seconds: float) -> bool:
    """Move the fake clock on (for use inside a polled condition); always true."""
    kube.clock.advance(seconds)
    return True


def test_connection_failures_back_off_and_resume(kube: FakeKube) -> None:
    kube.fail("watch", ApiError("connection refused", status=0, reason="ConnectionError"), times=2)
    w = NamespaceWatcher(kube, NS, clock=kube.clock)
    w.start()
    try:
        assert w.wait_synced(REACT)
        assert until(lambda: kube.count("watch") >= 2)
        # Past any back-off. Time moves on at every check: a watch thread that had not begun its
        # back-off wait when time first moved (a loaded machine) still wakes.
        assert until(lambda: ticked(kube, 10) and kube.count("watch") >= 5)
        assert w.failure is None
    finally:
        w.stop()


def test_a_refusal_of_one_kind_is_not_cleared_by_another_kinds_relist(kube: FakeKube) -> None:
    forbidden = ForbiddenError("events is forbidden", status=403, reason="Forbidden")
    kube.refuse["events"] = forbidden
    w = NamespaceWatcher(kube, NS, clock=kube.clock)
    w.start()
    try:
        assert until(lambda: w.failure is not None)
        assert w.failure is forbidden
        # Jobs and pods keep listing and watching: the refusal of events stays.
        kube.compacted = kube.rv + 1000
        kube.end_watches()
        relisted = lambda: {c.args[0] for c in kube.calls[3:] if c.method == "list"}  # noqa: E731
        assert until(lambda: relisted() >= {"jobs", "pods"})
        assert w.failure is forbidden
        # Once events may be read again, the refusal goes.
        del kube.refuse["events"]
        assert until(lambda: ticked(kube, 10) and w.failure is None)
    finally:
        w.stop()


def test_the_safety_relist_runs_at_its_interval(kube: FakeKube, watcher: NamespaceWatcher) -> None:
    assert until(lambda: kube.count("watch") == 3)
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
