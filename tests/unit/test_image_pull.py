"""A failing pull: "will not get better" fails within 30 s, "may get better" keeps its bound.

The in-memory API plays the kubelet: the container waits in ErrImagePull, then ImagePullBackOff
(whose message may carry no cause), and a "Failed to pull image" event counts the attempts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from k8s_step_operator import (
    ImageError,
    KubernetesJobStepOperatorSettings,
    StepRunInfo,
    build_job,
)
from k8s_step_operator._runner.diagnosis import Phase, Problem, decide, observe
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeClock, FakeKube, SyncWatchers

NS = "ml"
IMAGE = "localhost/does-not-exist:1.0"
REFUSED = (
    f'failed to pull and unpack image "{IMAGE}": failed to resolve reference "{IMAGE}": failed '
    'to do request: Head "https://localhost/v2/does-not-exist/manifests/1.0": dial tcp '
    "127.0.0.1:443: connect: connection refused"
)
RATE_LIMITED = (
    'failed to pull and unpack image "docker.io/library/python:3.12": failed to copy: '
    "httpReadSeeker: failed open: unexpected status code "
    "https://registry-1.docker.io/v2/library/python/blobs/sha256:ab: 429 Too Many Requests - "
    "Server message: toomanyrequests: You have reached your pull rate limit"
)


def make(**overrides: Any) -> tuple[FakeKube, StepRun]:
    clock = FakeClock()
    kube = FakeKube(clock)
    settings = KubernetesJobStepOperatorSettings(
        namespace=NS, image=IMAGE, stream_logs=False, **overrides
    )
    info = StepRunInfo(step_run_id="sr", run_id="run", pipeline_step_name="train")
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


def waiting(kube: FakeKube, job: dict[str, Any], reason: str, message: str) -> None:
    kube.set_pod(
        job,
        spec={"nodeName": "real-node-0"},
        containerStatuses=[
            {"name": "step", "state": {"waiting": {"reason": reason, "message": message}}}
        ],
    )


def failed_pull(kube: FakeKube, job: dict[str, Any], cause: str, count: int) -> None:
    """The kubelet's event, one object whose count goes up at every attempt."""
    pod = f"{job['metadata']['name']}-abcde"
    kube.put(
        "events",
        NS,
        {
            "metadata": {"name": f"{pod}.pull", "namespace": NS},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS},
            "reason": "Failed",
            "message": f'Failed to pull image "{IMAGE}": {cause}',
            "type": "Warning",
            "source": {"component": "kubelet"},
            "count": count,
        },
    )


def kubelet(kube: FakeKube, cause: str, until: float, rpc: str = "") -> Any:
    """ErrImagePull and ImagePullBackOff in turn, as the kubelet retries with back-off."""

    def on_create(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        t, attempt = 0.9, 1
        while t < until:

            def pull(attempt: int = attempt) -> None:
                current = kube.job(NS, name)
                failed_pull(kube, current, rpc + cause, attempt)
                waiting(kube, current, "ErrImagePull", rpc + cause)

            def back_off() -> None:
                waiting(
                    kube,
                    kube.job(NS, name),
                    "ImagePullBackOff",
                    f'Back-off pulling image "{IMAGE}"',
                )

            kube.clock.after(t, pull)
            kube.clock.after(t + 0.5, back_off)
            t, attempt = t + min(10 * 2 ** (attempt - 1), 300), attempt + 1

    kube.on_create = on_create


def test_a_registry_that_refuses_the_connection_fails_within_30s_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It used to fail after 309 s with 12 repeated pull lines; the first, at 0.9 s, already said
    # "connection refused".
    kube, run = make()
    kubelet(kube, REFUSED, until=400, rpc="rpc error: code = Unknown desc = ")
    caplog.set_level(logging.INFO, "k8s_step_operator")
    with pytest.raises(ImageError) as raised:
        run.run()
    assert kube.clock.t - 1000 <= 31
    message = str(raised.value)
    # The attempts are the kubelet's count as last read (events are read at intervals).
    assert re.search(
        r"connect: connection refused \(will not get better: [23] attempts, failing for 30s\)",
        message,
    ), message
    assert raised.value.reason == "ErrImagePull"  # whether read while pulling or backing off
    said = [r.getMessage() for r in caplog.records if "cannot be pulled" in r.getMessage()]
    assert len(said) == 1, said  # once, not at every retry
    assert f"image {IMAGE} cannot be pulled on real-node-0: " in said[0]


def test_a_rate_limit_keeps_the_bound() -> None:
    kube, run = make(image_pull_backoff_timeout=120)
    kubelet(kube, RATE_LIMITED, until=400)
    with pytest.raises(ImageError) as raised:
        run.run()
    assert 120 <= kube.clock.t - 1000 <= 123
    # Pulled at 0.9, 10.9, 30.9 and 70.9 s; the bound counts from the first failure.
    assert "4 attempts, image_pull_backoff_timeout)" in str(raised.value)
    assert raised.value.reason == "ErrImagePull"
    assert "(still failing after 12" in str(raised.value)


@pytest.mark.parametrize(
    ("cause", "problem"),
    [
        (REFUSED, Problem.IMAGE_UNAVAILABLE),
        ("dial tcp: lookup registry.invalid: no such host", Problem.IMAGE_UNAVAILABLE),
        ("manifest unknown: manifest unknown", Problem.IMAGE_UNAVAILABLE),
        ('failed to resolve reference "x:1": x:1: not found', Problem.IMAGE_UNAVAILABLE),
        (
            "pull access denied, repository does not exist or may require authorization",
            Problem.IMAGE_UNAVAILABLE,
        ),
        (RATE_LIMITED, Problem.IMAGE_PULL),
        ("dial tcp 10.0.0.1:443: i/o timeout", Problem.IMAGE_PULL),
        ("net/http: TLS handshake timeout", Problem.IMAGE_PULL),
        ("received unexpected HTTP status: 503 Service Unavailable", Problem.IMAGE_PULL),
        ("something new", Problem.IMAGE_PULL),
        # A status code's digits inside a digest or a port are not that status.
        (
            "docker.io/library/python@sha256:4290a5027f50312: not found",
            Problem.IMAGE_UNAVAILABLE,
        ),
        ("dial tcp 10.0.0.7:15029: connect: connection refused", Problem.IMAGE_UNAVAILABLE),
        ("unexpected status code 502 Bad Gateway", Problem.IMAGE_PULL),
    ],
)
def test_will_not_get_better_and_may_get_better(cause: str, problem: Problem) -> None:
    pod: Any = {
        "metadata": {"name": "j-abcde"},
        "spec": {"nodeName": "n1", "containers": [{"name": "step", "image": IMAGE}]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "step", "state": {"waiting": {"reason": "ErrImagePull", "message": cause}}}
            ],
        },
    }
    obs = observe({"metadata": {"name": "j"}, "status": {}}, [pod])
    assert obs.phase is Phase.STARTING and obs.problem is problem
    settings = KubernetesJobStepOperatorSettings()
    bound = 30.0 if problem is Problem.IMAGE_UNAVAILABLE else 300.0
    assert decide(obs, bound - 1, settings) is None
    assert isinstance(decide(obs, bound, settings), ImageError)
    # A smaller pull bound wins over the 30 s grace; none leaves the grace.
    short = KubernetesJobStepOperatorSettings(image_pull_backoff_timeout=10)
    assert isinstance(decide(obs, 10, short), ImageError)


def test_the_cause_is_read_without_its_wrappings_and_the_attempts_from_the_pods_events() -> None:
    from k8s_step_operator._runner.image_pull import container_image, pull_cause

    def failed(pod: str, count: int, text: str) -> Any:
        return {"involvedObject": {"name": pod}, "count": count,
                "message": f'Failed to pull image "{IMAGE}": {text}'}  # fmt: skip

    events = [failed("p", 3, "rpc error: code = Unknown desc = " + REFUSED), failed("q", 9, "x")]
    back_off = f'Back-off pulling image "{IMAGE}"'
    # The back-off says no cause: the event on this pod does (not another pod's).
    assert pull_cause("p", "ImagePullBackOff", back_off, events) == (REFUSED, 3)
    # The container's own message wins over the events'.
    said = f"{back_off}: ErrImagePull: rpc error: code = NotFound desc = not found"
    assert pull_cause("p", "ImagePullBackOff", said, events) == ("not found", 3)
    # Nothing says more than the reason.
    assert pull_cause("r", "ErrImagePull", "", events) == ("ErrImagePull", 0)
    slim = {"status": {"containerStatuses": [{"name": "main", "image": IMAGE}]}}
    assert container_image(slim, "main") == IMAGE
    assert container_image(slim, "sidecar") == ""
