"""Each step's timeline and diagnosis as ZenML run metadata: made from the core's ``Finished``
event, recorded by the step operator through ZenML's own run-metadata API, read back from the
store.

The pure part (what is recorded, the GPU model) is tested here directly. The recording runs in
a ZenML of its own (a SQLite store, ``pipelines/metadata_script.py``): a real pipeline run gives
real step runs, the operator is handed the ``Finished`` events the core would publish and
records them in ``cleanup_step_submission``, and ``Client()`` reads them back. The same read
against a ZenML server, after real pipelines on the cluster, is in ``test_zenml_production.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

zenml = pytest.importorskip("zenml")

from k8s_step_operator import (  # noqa: E402
    Finished,
    OOMKilledError,
    Phase,
    Timeline,
    UnschedulableError,
)
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings  # noqa: E402
from k8s_step_operator.integrations.zenml import run_metadata  # noqa: E402
from tests.zenml_integration.conftest import ZenMLProject, zenml_env  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "pipelines" / "metadata_script.py"


def finished(**changes: Any) -> Finished:
    fields: dict[str, Any] = {
        "at": datetime.now(UTC),
        "step": "train",
        "job": "train-1a2b3c",
        "namespace": "ml",
        "step_run_id": "42",
        "succeeded": True,
        "timeline": Timeline(
            seconds={
                Phase.SUBMITTED: 0.05,
                Phase.QUEUED: 2.5,
                Phase.SCHEDULING: 0.25,
                Phase.SCALING_UP: 30.0,
                Phase.STARTING: 1.75,
                Phase.RUNNING: 12.0,
            },
            node="gpu-node-3",
            gpus=2,
            gpu_resource="nvidia.com/gpu",
        ),
    }
    fields.update(changes)
    return Finished(**fields)


def test_the_timeline_becomes_seconds_per_phase_node_gpus_and_gpu_seconds() -> None:
    data = run_metadata.step_metadata(finished(), gpu_model="NVIDIA-H100-80GB-HBM3")
    assert data == {
        "job": "ml/train-1a2b3c",
        "outcome": "succeeded",
        "queued_seconds": 2.5,
        "scheduling_seconds": 0.25,
        "scaling_up_seconds": 30.0,
        "starting_seconds": 1.75,
        "running_seconds": 12.0,
        "total_seconds": 46.55,
        "node": "gpu-node-3",
        "gpu_model": "NVIDIA-H100-80GB-HBM3",
        "gpus": 2,
        "gpu_resource": "nvidia.com/gpu",
        "gpu_seconds": 24.0,
    }


def test_a_failure_carries_its_typed_reason_without_the_log() -> None:
    error = OOMKilledError(
        "the container used more memory than its limit",
        job="train-1a2b3c",
        namespace="ml",
        pod="train-1a2b3c-x",
        reason="OOMKilled",
        exit_code=137,
        log_tail=["allocating", "secret output"],
    )
    data = run_metadata.step_metadata(finished(succeeded=False, error=error), gpu_model=None)
    assert data["outcome"] == "failed"
    assert data["failure"] == "OOMKilledError"
    assert data["failure_reason"] == "OOMKilled"
    assert data["exit_code"] == 137
    assert "OOM" in data["failure_message"] and "exit code 137" in data["failure_message"]
    assert "secret output" not in data["failure_message"]
    assert data["gpu_model"] == ""
    unschedulable = UnschedulableError(
        "0/5 nodes are available: 5 Insufficient nvidia.com/gpu", reason="Unschedulable"
    )
    data = run_metadata.step_metadata(
        finished(succeeded=False, error=unschedulable), gpu_model=None
    )
    assert data["failure"] == "UnschedulableError"
    assert "exit_code" not in data
    assert "Insufficient nvidia.com/gpu" in data["failure_message"]


def test_the_gpu_model_comes_from_the_node_else_from_the_request() -> None:
    asked = CoreSettings(gpu_type="H100")
    gfd = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "kubernetes.io/os": "linux"}
    assert run_metadata.gpu_model(gfd, asked) == "NVIDIA-H100-80GB-HBM3"
    gke = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert run_metadata.gpu_model(gke, asked) == "nvidia-l4"
    own = CoreSettings(gpu_label_key="example.com/gpu-model")
    assert run_metadata.gpu_model({"example.com/gpu-model": "X1", **gfd}, own) == "X1"
    # Nodes cannot be read, or the node has no such label: the step's request.
    assert run_metadata.gpu_model(None, asked) == "H100"
    assert run_metadata.gpu_model({"kubernetes.io/os": "linux"}, asked) == "H100"
    assert run_metadata.gpu_model(None, CoreSettings()) is None


def test_the_recorder_keeps_each_step_runs_end_until_taken() -> None:
    recorder = run_metadata.Recorder()
    recorder.on_event(finished(step_run_id="a"))
    recorder.on_event(finished(step_run_id=None))
    assert list(recorder.pending()) == ["a"]
    got = recorder.take("a")
    assert got is not None and got.step_run_id == "a"
    assert recorder.take("a") is None
    assert recorder.take("b", wait=0.05) is None


def test_the_operator_records_metadata_zenml_reads_back(tmp_path: Path) -> None:
    """Real ZenML, SQLite store: the recorded metadata is what ``Client()`` returns."""
    project = ZenMLProject(root=tmp_path, env=zenml_env(tmp_path / "config"))
    project.repo.mkdir()
    shutil.copy(SCRIPT, project.repo / SCRIPT.name)
    done = project.run([sys.executable, SCRIPT.name], timeout=300)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    ok, oom, cpu = steps["gpu_step"], steps["oom_step"], steps["cpu_step"]

    card = ok[run_metadata.METADATA_KEY]
    assert card["outcome"] == "succeeded"
    assert card["queued_seconds"] == 2.5
    assert card["scheduling_seconds"] == 0.25
    assert card["starting_seconds"] == 1.75
    assert card["running_seconds"] == 12.0
    assert card["node"] == "gpu-node-3"
    # From the node's labels, which the operator could read.
    assert card["gpu_model"] == "NVIDIA-H100-80GB-HBM3"
    assert card["gpu_seconds"] == 24.0

    card = oom[run_metadata.METADATA_KEY]
    assert card["outcome"] == "failed"
    assert card["failure"] == "OOMKilledError"
    assert card["exit_code"] == 137

    card = cpu[run_metadata.METADATA_KEY]
    assert (card["gpus"], card["gpu_model"], card["gpu_seconds"]) == (0, "", 0.0)
