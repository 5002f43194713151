"""ZenML pipelines the production-stack tests run; ``python prod_pipelines.py NAME`` runs one.

The stack is ZenML's kubernetes orchestrator, an S3 artifact store and a ZenML server; the file
is copied into the test's source root, which ZenML uploads to the artifact store for every pod
to download. Steps without ``step_operator`` run in ZenML's own step pods (the orchestrator's);
the others go through the stack's step operator as Jobs. Step operator settings use the
shortcut key ``step_operator``, so that the same pipeline runs on any step operator.
"""

from __future__ import annotations

import os
import sys
import time

from zenml import get_step_context, pipeline, step
from zenml.client import Client
from zenml.config import DockerSettings, ResourceSettings
from zenml.config.retry_config import StepRetryConfig

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")
DOCKER = DockerSettings(parent_image=IMAGE, skip_build=True)
ENVIRONMENT = {"LONG_STEP_SECONDS": os.environ.get("LONG_STEP_SECONDS", "600")}


@step
def load_data() -> list[float]:
    print(f"load_data in ZenML's own step pod {os.uname().nodename}", flush=True)
    return [float(i) for i in range(1, 11)]


@step(
    step_operator=True,
    settings={"resources": ResourceSettings(gpu_count=1, memory="1GiB")},
)
def train(data: list[float]) -> dict[str, float]:
    print(f"train: {len(data)} samples on {os.uname().nodename}", flush=True)
    return {"mean": sum(data) / len(data), "n": float(len(data))}


@step(step_operator=True, retry=StepRetryConfig(max_retries=1, delay=0))
def flaky(model: dict[str, float]) -> str:
    context = get_step_context()
    attempts = Client().list_run_steps(
        pipeline_run_id=context.pipeline_run.id, name=context.step_run.name, size=10
    )
    if attempts.total < 2:
        raise RuntimeError("the first attempt fails on purpose")
    return f"accepted after {attempts.total} attempts (n={model['n']:.0f})"


@step
def evaluate(model: dict[str, float], verdict: str) -> str:
    report = f"mean={model['mean']} {verdict}"
    print(f"evaluate: {report}", flush=True)
    return report


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def production() -> None:
    model = train(load_data())
    evaluate(model, flaky(model))


@step(step_operator=True, settings={"resources": ResourceSettings(gpu_count=64)})
def too_big() -> None:
    print("never runs", flush=True)


@pipeline(settings={"docker": DOCKER}, enable_cache=False)
def unschedulable() -> None:
    too_big()


@step(step_operator=True, settings={"resources": ResourceSettings(memory="400MiB")})
def hog_memory() -> int:
    print("allocating", flush=True)
    blocks = [bytearray(32 * 1024 * 1024) for _ in range(64)]
    return len(blocks)


@pipeline(settings={"docker": DOCKER}, enable_cache=False)
def oom() -> None:
    hog_memory()


@step(step_operator=True, settings={"step_operator": {"active_deadline_seconds": 20}})
def overrun() -> None:
    print("running past the deadline", flush=True)
    time.sleep(300)


@pipeline(settings={"docker": DOCKER}, enable_cache=False)
def deadline() -> None:
    overrun()


@step(step_operator=True, settings={"resources": ResourceSettings(gpu_count=1)})
def long_step() -> str:
    print("long step started", flush=True)
    seconds = float(os.environ.get("LONG_STEP_SECONDS", "600"))
    time.sleep(seconds)
    return f"slept {seconds:.0f} s"


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def long_running() -> None:
    long_step()


@step(step_operator=True)
def square(x: int) -> int:
    print(f"square({x})", flush=True)
    return x * x


@step(step_operator=True)
def add(a: int, b: int) -> int:
    return a + b


@pipeline(dynamic=True, settings={"docker": DOCKER}, enable_cache=False)
def dynamic() -> None:
    first = square.submit(3)
    second = square.submit(4)
    add(first, second)


PIPELINES = {
    "production": production,
    "unschedulable": unschedulable,
    "oom": oom,
    "deadline": deadline,
    "long_running": long_running,
    "dynamic": dynamic,
}

if __name__ == "__main__":
    PIPELINES[sys.argv[1]]()
