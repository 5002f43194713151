"""A ZenML pipeline with a Python step on two nodes; ``python zranks.py ranks`` runs it.

Copied into the test's ZenML source root like ``zpipelines.py``; every step runs on the stack's
step operator in the torch image (ZenML, this project and Debian's python3-torch). ``allreduce``
runs on two pods: rank 0 is ZenML's step run, rank 1 a worker running the same function on the
same input; they all-reduce over gloo. After the run, one line of JSON says what ZenML stored.
"""

from __future__ import annotations

import json
import os
import sys

from zenml import pipeline, step
from zenml.client import Client
from zenml.config import DockerSettings, ResourceSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-torch:dev")
DOCKER = DockerSettings(parent_image=IMAGE, skip_build=True)


@step(step_operator=True)
def numbers() -> list[float]:
    return [1.0, 2.0, 3.0]


@step(
    step_operator=True,
    settings={
        "resources": ResourceSettings(memory="1GiB"),
        "step_operator:k8s": {"num_nodes": 2},
    },
)
def allreduce(data: list[float]) -> float:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([sum(data) * (rank + 1)])
    dist.all_reduce(total)
    print(f"rank {rank} of {world} read {data}: all_reduce {total.item():g}", flush=True)
    dist.destroy_process_group()
    return float(total.item())


@step(step_operator=True)
def report(total: float) -> str:
    print(f"report: total={total:g}", flush=True)
    return f"total={total:g}"


@pipeline(settings={"docker": DOCKER}, enable_cache=False)
def ranks() -> None:
    report(allreduce(numbers()))


def stored() -> dict[str, object]:
    """What ZenML recorded of the last run: statuses, the step's output, its artifacts."""
    client = Client()
    run = client.get_pipeline("ranks").last_run
    steps = {s.name: s for s in client.list_run_steps(pipeline_run_id=run.id, size=100).items}
    step_run = client.get_run_step(steps["allreduce"].id)
    outputs = step_run.outputs
    return {
        "status": str(run.status.value),
        "steps": {name: str(s.status.value) for name, s in steps.items()},
        "allreduce": outputs["output"][0].load() if outputs.get("output") else None,
        "allreduce_outputs": {key: len(versions) for key, versions in outputs.items()},
        "run_artifacts": len(client.list_artifact_versions(pipeline_run=run.id, size=100).items),
    }


if __name__ == "__main__":
    name = sys.argv[1]
    try:
        {"ranks": ranks}[name]()
    finally:
        print("STORED " + json.dumps(stored()), flush=True)
