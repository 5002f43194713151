"""Each step's timeline and diagnosis, recorded in ZenML as the step run's metadata.

The core says, when a step's Job ends, where the step spent its time (``Finished`` with its
``Timeline``: seconds queued, scheduling, scaling up, starting and running, the node, the GPUs and
what they cost) and, when it failed, why (the typed ``StepError``). ``Recorder`` subscribes to
those events and keeps the last one of each step run; the step operator records it through
ZenML's run-metadata API from the process that runs it, once ZenML is done waiting (in
``cleanup_step_submission``), so that recording never delays ZenML seeing the step's end.

What is recorded, under the key ``kubernetes_job`` (a card in ZenML's dashboard)::

    {"job": "ml/train-1a2b", "outcome": "succeeded",
     "queued_seconds": 0.0, "scheduling_seconds": 0.41, "scaling_up_seconds": 0.0,
     "starting_seconds": 1.93, "running_seconds": 12.2, "total_seconds": 14.6,
     "node": "gpu-node-3", "gpu_model": "NVIDIA-H100-80GB-HBM3", "gpus": 1,
     "gpu_resource": "nvidia.com/gpu", "gpu_seconds": 12.2}

and on failure also ``failure`` (the error's type: ``OOMKilledError``, ``UnschedulableError``,
``DeadlineExceededError``...), ``failure_reason`` (Kubernetes' reason word), ``exit_code`` and
``failure_message``. The GPU model is read from the node's labels when the operator can read
nodes, else it is the step's requested ``gpu_type``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from k8s_step_operator import (
    GPU_LABEL_SCHEMES,
    Event,
    Finished,
    GPULabelScheme,
    Phase,
    StepError,
)
from k8s_step_operator import KubernetesJobStepOperatorSettings as CoreSettings

__all__ = ["METADATA_KEY", "PHASES", "Recorder", "gpu_model", "step_metadata"]

METADATA_KEY = "kubernetes_job"
# The phases a step passes through before its end, as recorded (``<phase>_seconds``).
PHASES = (Phase.QUEUED, Phase.SCHEDULING, Phase.SCALING_UP, Phase.STARTING, Phase.RUNNING)
# A failure's message is shortened to this many characters (ZenML stores metadata as text).
MESSAGE_LIMIT = 2000
_LOG_TAIL = "\n--- last lines of the step's log ---"


def _seconds(value: float) -> float:
    return round(float(value), 3)


def step_metadata(finished: Finished, *, gpu_model: str | None) -> dict[str, Any]:
    """The metadata recorded for a step whose Job ended, as ZenML's metadata values.

    Args:
        finished: The core's event at the Job's end.
        gpu_model: The model of the step's GPUs (``gpu_model``), if known.
    """
    timeline = finished.timeline
    data: dict[str, Any] = {
        "job": finished.where,
        "outcome": "succeeded" if finished.succeeded else "failed",
    }
    for phase in PHASES:
        data[f"{phase.value.replace(' ', '_')}_seconds"] = _seconds(timeline.of(phase))
    data["total_seconds"] = _seconds(sum(timeline.seconds.values()))
    data["node"] = timeline.node
    # A step without GPUs ignores the component's gpu_type: it has no GPU model.
    data["gpu_model"] = (gpu_model or "") if timeline.gpus else ""
    data["gpus"] = timeline.gpus
    data["gpu_resource"] = timeline.gpu_resource
    data["gpu_seconds"] = _seconds(timeline.gpu_seconds)
    error = finished.error
    if error is not None:
        data.update(failure_of(error))
    return data


def failure_of(error: StepError) -> dict[str, Any]:
    """The typed reason a step failed: the error's type, Kubernetes' reason, exit code, message."""
    data: dict[str, Any] = {
        "failure": type(error).__name__,
        "failure_reason": error.reason or "",
        # Without the log tail: the step's log is ZenML's to keep.
        "failure_message": str(error).split(_LOG_TAIL, 1)[0][:MESSAGE_LIMIT],
    }
    if error.exit_code is not None:
        data["exit_code"] = error.exit_code
    return data


def gpu_model(
    node_labels: Mapping[str, str] | None,
    settings: CoreSettings,
    schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES,
) -> str | None:
    """The GPU model of the node that ran the step, else the one the step asked for.

    The node's label is the one the step's settings name (``gpu_label_key``, else the scheme of
    ``gpu_label_scheme``), else the first label any known scheme uses.
    """
    if node_labels:
        keys: list[str] = []
        if settings.gpu_label_key:
            keys.append(settings.gpu_label_key)
        if settings.gpu_label_scheme and settings.gpu_label_scheme in schemes:
            keys.append(schemes[settings.gpu_label_scheme].label_key)
        keys += [scheme.label_key for scheme in schemes.values()]
        for key in keys:
            if node_labels.get(key):
                return node_labels[key]
    return settings.gpu_type


class Recorder:
    """Keeps the last ``Finished`` event of each step run, until it is taken.

    Subscribe ``on_event`` to the core operator; it is called on the runners' threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: dict[str, Finished] = {}
        self._ended = threading.Condition(self._lock)

    def on_event(self, event: Event) -> None:
        """Keep ``event`` if it is the end of a step run."""
        if isinstance(event, Finished) and event.step_run_id:
            with self._ended:
                self._finished[event.step_run_id] = event
                self._ended.notify_all()

    def take(self, step_run_id: str, *, wait: float = 0.0) -> Finished | None:
        """The end of ``step_run_id`` (forgotten here), waiting up to ``wait`` seconds for it."""
        with self._ended:
            self._ended.wait_for(lambda: step_run_id in self._finished, timeout=wait)
            return self._finished.pop(step_run_id, None)

    def pending(self) -> Iterable[str]:
        """The step runs whose end is kept."""
        with self._lock:
            return list(self._finished)
