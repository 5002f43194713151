"""A three-step ZenML pipeline whose training step asks for a GPU; every step runs as a Job.

``load_data`` runs on a CPU, ``train`` on one GPU (``ResourceSettings(gpu_count=1)``), then
``evaluate``; each returns an artifact the next one reads. Nothing here knows about Kubernetes:
``step_operator=True`` sends each step to the stack's step operator, the ``kubernetes_job``
flavor of k8s-step-operator, and the image is the ZenML step image as it is
(``DockerSettings(parent_image=..., skip_build=True)``: no Docker, no registry).

``make demo-zenml`` sets up ZenML and the cluster for it (``examples/zenml/demo.py``) and runs
this file; with a stack of your own, ``python pipeline.py`` runs it.
"""

from __future__ import annotations

import os
import random
import statistics

from zenml import pipeline, step
from zenml.config import DockerSettings, ResourceSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")


@step(step_operator=True)
def load_data() -> list[tuple[float, float]]:
    """Points on a noisy line y = 3x + 2."""
    rng = random.Random(42)
    data = [(x / 10, 3 * x / 10 + 2 + rng.gauss(0, 0.1)) for x in range(100)]
    print(f"load_data: {len(data)} points on {os.uname().nodename}", flush=True)
    return data


@step(
    step_operator=True,
    settings={
        "resources": ResourceSettings(gpu_count=1, memory="1GiB"),
        # Any setting of the step operator, for this step only.
        "step_operator.kubernetes_job": {"shm_size": "256Mi"},
    },
)
def train(data: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares on the step's GPU node (the arithmetic runs on its CPU)."""
    xs, ys = [x for x, _ in data], [y for _, y in data]
    slope, intercept = statistics.linear_regression(xs, ys)
    gpu = os.environ.get("NVIDIA_VISIBLE_DEVICES", "none visible (no device plugin here)")
    print(f"train: slope={slope:.3f} intercept={intercept:.3f}; GPU: {gpu}", flush=True)
    return {"slope": slope, "intercept": intercept}


@step(step_operator=True)
def evaluate(model: dict[str, float], data: list[tuple[float, float]]) -> float:
    """Mean squared error of the model on the data."""
    errors = [(model["slope"] * x + model["intercept"] - y) ** 2 for x, y in data]
    mse = sum(errors) / len(errors)
    print(f"evaluate: mse={mse:.4f}", flush=True)
    return mse


@pipeline(
    settings={"docker": DockerSettings(parent_image=IMAGE, skip_build=True)}, enable_cache=False
)
def gpu_training() -> None:
    """Load, train on a GPU, evaluate."""
    data = load_data()
    model = train(data)
    evaluate(model, data)


if __name__ == "__main__":
    gpu_training()
