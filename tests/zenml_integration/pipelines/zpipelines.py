"""ZenML pipelines the cluster tests run; ``python zpipelines.py NAME`` runs one.

The file is copied into each test's ZenML source root, uploaded by ZenML to the artifact store
and downloaded by every step's pod (into ``/app/code``), as a user's pipeline code would be.
Every step runs on the stack's step operator, in the ZenML step image.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from zenml import get_step_context, pipeline, step
from zenml.config import DockerSettings, ResourceSettings
from zenml.config.retry_config import StepRetryConfig

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")
DOCKER = DockerSettings(parent_image=IMAGE, skip_build=True)
# Read by the steps in their pods: ZenML passes a pipeline's `environment` to every step.
ENVIRONMENT = {
    "STEP_SLEEP": os.environ.get("STEP_SLEEP", "0"),
    "LONG_STEP_SECONDS": os.environ.get("LONG_STEP_SECONDS", "300"),
}


def _sleep() -> None:
    time.sleep(float(os.environ.get("STEP_SLEEP", "0")))


@step(step_operator=True)
def load_data() -> list[int]:
    print(f"load_data on {os.uname().nodename} as uid {os.getuid()}", flush=True)
    _sleep()
    return list(range(1, 11))


@step(
    step_operator=True,
    settings={
        "resources": ResourceSettings(gpu_count=1, memory="1GiB"),
        # The flavor's key (ZenML turns it into the component's own).
        "step_operator.kubernetes_job": {"shm_size": "128Mi"},
    },
)
def train(data: list[int]) -> float:
    print(f"train: {len(data)} samples", flush=True)
    _sleep()
    return sum(data) / len(data)


# The component's key: "step_operator:<component name>".
@step(
    step_operator=True, settings={"step_operator:k8s": {"pod_labels": {"zenml-key": "component"}}}
)
def evaluate(model: float) -> str:
    _sleep()
    print(f"evaluate: model={model}", flush=True)
    return f"score={model}"


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def three_steps() -> None:
    evaluate(train(load_data()))


@step(step_operator=True)
def explode(data: list[int]) -> int:
    print("about to fail", flush=True)
    raise ValueError(f"boom in the step after {len(data)} samples")


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def failing() -> None:
    explode(load_data())


@step(step_operator=True, settings={"resources": ResourceSettings(memory="400MiB")})
def hog_memory() -> int:
    print("allocating", flush=True)
    blocks = [bytearray(32 * 1024 * 1024) for _ in range(64)]
    return len(blocks)


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def oom() -> None:
    hog_memory()


@step(step_operator=True, retry=StepRetryConfig(max_retries=1, delay=0))
def flaky() -> str:
    # The local stores are shared with the machine that runs the pipeline: a marker there says
    # whether an attempt already failed.
    run_id = get_step_context().pipeline_run.id
    marker = Path(os.environ["ZENML_LOCAL_STORES_PATH"]) / f"flaky-{run_id}"
    if not marker.exists():
        marker.write_text("failed once\n")
        raise RuntimeError("the first attempt fails on purpose")
    return "second attempt"


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def retried() -> None:
    flaky()


@step(step_operator=True, settings={"resources": ResourceSettings(gpu_count=64)})
def too_big() -> None:
    print("never runs", flush=True)


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def unschedulable() -> None:
    too_big()


@step(step_operator=True)
def long_step() -> None:
    print("long step started", flush=True)
    time.sleep(float(os.environ.get("LONG_STEP_SECONDS", "300")))


@pipeline(settings={"docker": DOCKER}, environment=ENVIRONMENT, enable_cache=False)
def long_running() -> None:
    long_step()


PIPELINES = {
    "three_steps": three_steps,
    "failing": failing,
    "oom": oom,
    "retried": retried,
    "unschedulable": unschedulable,
    "long_running": long_running,
}

if __name__ == "__main__":
    PIPELINES[sys.argv[1]]()
