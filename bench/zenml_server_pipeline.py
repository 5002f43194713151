"""The pipeline bench/zenml_server_bench.py times on the production stack: two step-operator
steps that sleep a second and pass an artifact, after a step on ZenML's orchestrator.

``K8SSO_ZENML_TRACE`` reaches ZenML's step pods through the pipeline's environment: the ZenML
image's launcher trace (``e2e/images/zenml_trace.py``) then prints when each step operator was
called and returned, and the API requests its process made.
"""

from __future__ import annotations

import os
import time

from zenml import pipeline, step
from zenml.config import DockerSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")


@step
def start() -> int:
    return 1


@step(step_operator=True)
def first(x: int) -> int:
    time.sleep(1)
    return x + 1


@step(step_operator=True)
def second(x: int) -> int:
    time.sleep(1)
    return x + 1


@pipeline(
    settings={"docker": DockerSettings(parent_image=IMAGE, skip_build=True)},
    environment={"K8SSO_ZENML_TRACE": "1"},
    enable_cache=False,
)
def two_sleeps() -> None:
    """start (orchestrator) -> first -> second (step operator), one second each."""
    second(first(start()))


if __name__ == "__main__":
    two_sleeps()
