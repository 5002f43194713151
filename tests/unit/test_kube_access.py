"""The API access's own rules, without a server: how many requests one client has in flight."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s

from k8s_step_operator._kube.access import KubeApi


class Response:
    """A response read with ``_preload_content=False``: its body is read on ``data``."""

    def __init__(self, reads: list[str]) -> None:
        self.reads = reads

    @property
    def data(self) -> bytes:
        self.reads.append("read")
        return b"{}"

    def release_conn(self) -> None:
        pass


def test_requests_past_the_limit_wait_for_a_turn_and_answers_are_read_within_it() -> None:
    api = KubeApi(k8s.ApiClient(k8s.Configuration()), max_in_flight=2)
    lock, inside, most = threading.Lock(), [0], [0]
    release = threading.Event()
    reads: list[str] = []

    def request(*args: Any, **kwargs: Any) -> Response:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(5)
        with lock:
            inside[0] -= 1
        return Response(reads)

    no_preload = {"_preload_content": False}
    threads = [
        threading.Thread(target=api._call, args=("get", request), kwargs=no_preload)
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    release.wait(0.3)
    assert most[0] == 2  # the others wait for a turn instead of opening connections
    release.set()
    for t in threads:
        t.join(5)
    assert most[0] == 2 and reads == ["read"] * 6


def test_a_call_after_the_workers_stopped_is_made_by_the_caller() -> None:
    # close() from another thread, or the interpreter exiting under a daemon thread: the pool's
    # executor refuses new work; the call is still made, from the calling thread.
    api = KubeApi(k8s.ApiClient(k8s.Configuration()))
    api._executor().shutdown()
    callers: list[str] = []

    def answer(*args: Any, **kwargs: Any) -> str:
        callers.append(threading.current_thread().name)
        return "answer"

    assert api._in_turn(answer)() == "answer"
    assert callers == [threading.current_thread().name]
