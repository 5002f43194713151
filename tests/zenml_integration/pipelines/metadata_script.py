"""Real step runs in a local ZenML, and the step operator recording their metadata.

``python metadata_script.py`` (in a ZenML source root, with its own ``ZENML_CONFIG_PATH``): runs
a three-step pipeline on the default stack, then hands a ``KubernetesJobStepOperator`` the
``Finished`` events the core would publish for each step run (a GPU step, an OOM-killed step, a
CPU step), calls its ``cleanup_step_submission`` as ZenML does after ``wait``, and prints, as
JSON, each step's run metadata as ``Client()`` reads it back from the store.

The core is stood in for only where it would reach the cluster (the node list the GPU model is
read from); everything ZenML does is ZenML's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from zenml import pipeline, step
from zenml.client import Client
from zenml.enums import StackComponentType
from zenml.stack import StackComponent

from k8s_step_operator import Finished, OOMKilledError, Phase, Timeline
from k8s_step_operator.integrations.zenml import KubernetesJobStepOperator


@step
def gpu_step() -> int:
    return 1


@step
def oom_step(x: int) -> int:
    return x


@step
def cpu_step(x: int) -> int:
    return x


@pipeline(enable_cache=False)
def three() -> None:
    cpu_step(oom_step(gpu_step()))


class Nodes:
    """The core's API access, as far as the GPU model needs it."""

    def list_nodes(self) -> list[dict[str, Any]]:
        labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        return [{"metadata": {"name": "gpu-node-3", "labels": labels}}]


def timeline(gpus: int) -> Timeline:
    return Timeline(
        seconds={
            Phase.QUEUED: 2.5,
            Phase.SCHEDULING: 0.25,
            Phase.STARTING: 1.75,
            Phase.RUNNING: 12.0,
        },
        node="gpu-node-3",
        gpus=gpus,
        gpu_resource="nvidia.com/gpu" if gpus else "",
    )


def main() -> None:
    Client.initialize(root=Path.cwd())
    three()
    client = Client()
    run = client.get_pipeline("three").last_run
    client.create_flavor(
        source="k8s_step_operator.integrations.zenml.flavor.KubernetesJobStepOperatorFlavor",
        component_type=StackComponentType.STEP_OPERATOR,
    )
    model = client.create_stack_component(
        name="k8s",
        flavor="kubernetes_job",
        component_type=StackComponentType.STEP_OPERATOR,
        configuration={"namespace": "ml", "gpu_type": "H100"},
    )
    operator = StackComponent.from_model(model)
    assert isinstance(operator, KubernetesJobStepOperator)
    operator.__dict__["_core"] = SimpleNamespace(access=Nodes)
    out: dict[str, Any] = {}
    for name, step_run in run.steps.items():
        error = None
        if name == "oom_step":
            error = OOMKilledError(
                "memory limit exceeded", job="j", namespace="ml", reason="OOMKilled", exit_code=137
            )
        operator.recorder.on_event(
            Finished(
                at=datetime.now(UTC),
                step=name,
                job=f"{name}-job",
                namespace="ml",
                step_run_id=str(step_run.id),
                succeeded=error is None,
                error=error,
                timeline=timeline(0 if name == "cpu_step" else 2),
            )
        )
        operator.cleanup_step_submission(step_run)
        out[name] = client.get_run_step(step_run.id).run_metadata
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
