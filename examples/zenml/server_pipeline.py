"""The production demo's pipeline: data, then training on a GPU through our step operator.

Data and evaluation run on ZenML's orchestrator (in its own step pods), training as a Job of the
``kubernetes_job`` step operator.

Every step's outputs go to the S3 artifact store; the GPU step's timeline (queued, scheduling,
starting, running seconds, node, GPU model, GPU-seconds) is recorded in the ZenML server as its
run metadata. ``python server_pipeline.py`` runs it on the active stack.
"""

from __future__ import annotations

import os

from zenml import pipeline, step
from zenml.config import DockerSettings, ResourceSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")


@step
def load_data() -> list[float]:
    """Runs in one of ZenML's own step pods."""
    return [float(i) for i in range(1, 101)]


@step(
    step_operator=True,
    settings={
        "resources": ResourceSettings(gpu_count=1, memory="1GiB"),
        "step_operator": {"shm_size": "256Mi"},
    },
)
def train(data: list[float]) -> dict[str, float]:
    """Runs as a Kubernetes Job on a GPU node, through the step operator."""
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "none")
    print(f"train: {len(data)} samples on {os.uname().nodename} (GPUs: {visible})", flush=True)
    return {"mean": sum(data) / len(data), "samples": float(len(data))}


@step
def evaluate(model: dict[str, float]) -> str:
    """Back in ZenML's own step pod: reads the GPU step's output from the artifact store."""
    report = f"mean={model['mean']:.2f} over {model['samples']:.0f} samples"
    print(f"evaluate: {report}", flush=True)
    return report


@pipeline(
    settings={"docker": DockerSettings(parent_image=IMAGE, skip_build=True)}, enable_cache=False
)
def gpu_training() -> None:
    """load_data -> train (1 GPU) -> evaluate."""
    evaluate(train(load_data()))


if __name__ == "__main__":
    gpu_training()
