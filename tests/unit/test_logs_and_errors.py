"""Log resumption without duplicates, and the translation of API failures into our errors."""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from k8s_step_operator import (
    ApiError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ServerUnavailableError,
    TooManyRequestsError,
)
from k8s_step_operator._kube import client as _client
from k8s_step_operator._runner.logs import LogFollower, _Stream


class _Owner:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def sink(self, stream: _Stream, text: str) -> None:
        self.lines.append(stream.prefix + text)


def _stream() -> tuple[_Stream, _Owner]:
    owner = _Owner()
    return _Stream(owner, "pod", "main", ""), owner  # type: ignore[arg-type]


def test_resumed_stream_drops_what_was_emitted() -> None:
    s, owner = _stream()
    first = [
        "2026-01-01T00:00:01.000000001Z a",
        "2026-01-01T00:00:02.000000000Z b",
        "2026-01-01T00:00:02.000000000Z c",
    ]
    for line in first:
        s._emit(line)
    # The stream is cut and resumed from a second earlier: it repeats everything since then.
    s.replayed = 0
    for line in [*first, "2026-01-01T00:00:02.000000000Z d", "2026-01-01T00:00:03Z e"]:
        s._emit(line)
    assert owner.lines == ["a", "b", "c", "d", "e"]


def test_identical_lines_with_distinct_timestamps_are_all_kept() -> None:
    s, owner = _stream()
    for i in range(3):
        s._emit(f"2026-01-01T00:00:0{i}.5Z same")
    assert owner.lines == ["same"] * 3


def test_follower_keeps_a_tail() -> None:
    emitted: list[tuple[str, str, str, str]] = []
    follower = LogFollower(
        None,  # type: ignore[arg-type]
        "ns",
        lambda *line: emitted.append(line),
        container_done=lambda pod, container: True,
    )
    follower.tail = collections.deque(maxlen=3)
    stream = _Stream(follower, "p", "main", "[p] ")
    for i in range(5):
        follower.sink(stream, f"line {i}")
    assert follower.last_lines() == ["line 2", "line 3", "line 4"]
    assert emitted[-1] == ("p", "main", "[p] ", "line 4")


def _api_exc(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> ApiException:
    e = ApiException(status=status, reason="Reason")
    e.body = json.dumps(body)
    e.headers = headers or {}
    return e


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, InvalidError),
        (429, TooManyRequestsError),
        (500, ServerUnavailableError),
        (503, ServerUnavailableError),
        (400, ApiError),
    ],
)
def test_status_maps_to_error_class(status: int, cls: type[ApiError]) -> None:
    err = _client.api_error(
        _api_exc(status, {"reason": "R", "message": "the server said so"}), "op"
    )
    assert type(err) is cls
    assert err.status == status and err.reason == "R" and "the server said so" in str(err)
    assert str(err).startswith("op: ")


def test_invalid_carries_field_causes() -> None:
    body = {
        "reason": "Invalid",
        "message": "Job.batch is invalid",
        "details": {
            "causes": [
                {
                    "field": "spec.template.spec.containers[0].image",
                    "reason": "FieldValueRequired",
                    "message": "Required value",
                }
            ]
        },
    }
    err = _client.api_error(_api_exc(422, body), "create Job ns/x")
    assert err.causes[0].field == "spec.template.spec.containers[0].image"
    assert "containers[0].image: Required value" in str(err)


def test_retry_after_is_read() -> None:
    err = _client.api_error(_api_exc(429, {"reason": "TooManyRequests"}, {"Retry-After": "2"}))
    assert isinstance(err, TooManyRequestsError) and err.retry_after == 2.0


def test_transport_errors_become_server_unavailable() -> None:
    err = _client.api_error(urllib3.exceptions.ProtocolError("connection reset"), "watch")
    assert isinstance(err, ServerUnavailableError) and err.status == 0


def test_call_retries_5xx_and_429_but_never_4xx() -> None:
    attempts: list[int] = []

    def flaky(fail_with: int, times: int) -> str:
        attempts.append(fail_with)
        if len(attempts) <= times:
            raise _api_exc(fail_with, {"reason": "x"}, {"Retry-After": "0"})
        return "ok"

    assert _client.call("op", flaky, 503, 2) == "ok"
    assert len(attempts) == 3
    attempts.clear()
    assert _client.call("op", flaky, 429, 1) == "ok"
    attempts.clear()
    with pytest.raises(ForbiddenError):
        _client.call("op", flaky, 403, 5)
    assert len(attempts) == 1
    attempts.clear()
    with pytest.raises(ServerUnavailableError):
        _client.call("op", flaky, 500, 100, budget=0.5)
    assert len(attempts) > 1


class FakeTime:
    """A monotonic clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_back_off_runs_on_the_clock_it_is_given() -> None:
    fake, attempts = FakeTime(), []

    def down() -> None:
        attempts.append(fake.now)
        raise _api_exc(503, {"reason": "ServiceUnavailable"})

    started = time.monotonic()
    with pytest.raises(ServerUnavailableError):
        _client.call("op", down, budget=30.0, sleep=fake.sleep, monotonic=fake.monotonic)
    assert time.monotonic() - started < 1.0  # nothing really slept
    # Exponential back-off with jitter: the n-th wait is within [ceiling/2, ceiling], the
    # ceiling doubling from 0.2 s up to 5 s; the last wait is cut to what the budget leaves.
    *waits, last = fake.sleeps
    for n, waited in enumerate(waits):
        ceiling = min(5.0, 0.2 * 2**n)
        assert ceiling / 2 <= waited <= ceiling, (n, waited)
    assert 0.0 <= last <= 5.0
    assert sum(fake.sleeps) == pytest.approx(30.0)  # the budget is the whole wait
    assert len(attempts) == len(fake.sleeps) + 1
    assert attempts[-1] == pytest.approx(1030.0)


def test_retry_after_sets_the_schedule_within_the_budget() -> None:
    fake, attempts = FakeTime(), []

    def throttled() -> str:
        attempts.append(fake.now)
        if len(attempts) < 10:
            raise _api_exc(429, {"reason": "TooManyRequests"}, {"Retry-After": "3"})
        return "ok"

    with pytest.raises(TooManyRequestsError):
        _client.call("op", throttled, budget=10.0, sleep=fake.sleep, monotonic=fake.monotonic)
    assert fake.sleeps == [3.0, 3.0, 3.0, 1.0]
    assert attempts == [1000.0, 1003.0, 1006.0, 1009.0, 1010.0]

    fake, attempts[:] = FakeTime(), []
    assert _client.call("op", throttled, sleep=fake.sleep, monotonic=fake.monotonic) == "ok"
    assert fake.sleeps == [3.0] * 9


def test_time_spent_in_attempts_counts_against_the_budget() -> None:
    fake, attempts = FakeTime(), []

    def slow() -> None:
        attempts.append(fake.now)
        fake.now += 4.0  # the server answers 500 after 4 s
        raise _api_exc(500, {"reason": "InternalError"})

    with pytest.raises(ServerUnavailableError):
        _client.call("op", slow, budget=10.0, sleep=fake.sleep, monotonic=fake.monotonic)
    # Ends at 4 s and 8 s plus the first two back-offs (under 1 s): the third ends past 10 s.
    assert len(attempts) == 3 and len(fake.sleeps) == 2
    assert fake.now - 1000.0 == pytest.approx(12.0 + sum(fake.sleeps))
