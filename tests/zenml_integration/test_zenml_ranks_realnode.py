"""A ZenML Python step on two nodes of the real node, end to end: a real torch.distributed
all-reduce over gloo between rank 0 (ZenML's step run) and rank 1 (a worker of it).

The pipeline (``pipelines/zranks.py``) runs in the module's own ZenML (local mode, as
``test_zenml_pipelines.py``) with every step in the torch image: ``numbers`` makes the input,
``allreduce`` runs on both ranks and returns the all-reduced sum, ``report`` reads it.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from kubernetes import client as k8s  # noqa: E402

from k8s_step_operator._job.keys import LABEL_RUN_ID, LABEL_STEP_NAME  # noqa: E402
from tests.conftest import poll, unavailable  # noqa: E402
from tests.zenml_integration.conftest import HERE, REAL_NODE, ZenMLStack  # noqa: E402

pytestmark = pytest.mark.realnode

TORCH_IMAGE = "localhost/k8s-step-operator-torch:dev"
PIPELINE = HERE / "pipelines" / "zranks.py"


def test_a_python_step_on_two_nodes_all_reduces_and_rank_0_alone_publishes(
    zenml_stack: ZenMLStack, api_client: Any
) -> None:
    def listed() -> bool:
        node = k8s.CoreV1Api(api_client).read_node(REAL_NODE)
        return any(TORCH_IMAGE in (i.names or ()) for i in node.status.images or ())

    # The kubelet lists an image imported a moment ago at its next image-cache refresh (30 s).
    if not poll(listed, 60):
        unavailable(
            f"{TORCH_IMAGE} is not on {REAL_NODE}: python e2e/realnode/node.py images torch"
        )
    project = zenml_stack.project
    shutil.copy(PIPELINE, project.repo / PIPELINE.name)
    done = project.run([sys.executable, PIPELINE.name, "ranks"], timeout=900)
    text = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, text
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("STORED ")]
    stored = json.loads(line.removeprefix("STORED "))
    assert stored["status"] == "completed", text
    assert stored["steps"] == {
        "numbers": "completed",
        "allreduce": "completed",
        "report": "completed",
    }
    # (1 + 2 + 3) x (1 + 2): each rank added its input times rank + 1.
    assert stored["allreduce"] == 18.0
    # Rank 1 published nothing: one output of the step, one artifact per step in the run.
    assert stored["allreduce_outputs"] == {"output": 1}
    assert stored["run_artifacts"] == 3
    # Both ranks ran the function on the same input, and their output came back with their rank.
    assert "[rank 0] rank 0 of 2 read [1.0, 2.0, 3.0]: all_reduce 18" in text, text
    assert "[rank 1] rank 1 of 2 read [1.0, 2.0, 3.0]: all_reduce 18" in text, text
    assert "report: total=18" in text
    run = project.last_run("ranks")
    batch = k8s.BatchV1Api(api_client)
    selector = f"{LABEL_RUN_ID}={run['id']},{LABEL_STEP_NAME}=allreduce"
    (job,) = batch.list_namespaced_job(zenml_stack.namespace, label_selector=selector).items
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == 2
