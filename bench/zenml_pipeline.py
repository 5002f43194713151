"""The pipeline bench/zenml_bench.py times: three steps that sleep a second and pass artifacts.

``BENCH_STEP_OPERATOR=0`` runs the steps in the pipeline's own process (ZenML's local
orchestrator, no step operator): the baseline. ``python zenml_pipeline.py`` runs it once and
prints the seconds the pipeline call took, as JSON; ``BENCH_WAIT_LOG`` names a file where each
return of the step operator's ``wait`` is recorded (``BENCH_WAIT=poll``: ZenML's default
``wait``, polling ``get_status``, instead of ours).
"""

from __future__ import annotations

import json
import os
import time

from zenml import pipeline, step
from zenml.config import DockerSettings

IMAGE = os.environ.get("ZENML_STEP_IMAGE", "localhost/k8s-step-operator-zenml:dev")
ON_OPERATOR = os.environ.get("BENCH_STEP_OPERATOR", "1") == "1"


@step(step_operator=ON_OPERATOR)
def first() -> int:
    time.sleep(1)
    return 1


@step(step_operator=ON_OPERATOR)
def second(x: int) -> int:
    time.sleep(1)
    return x + 1


@step(step_operator=ON_OPERATOR)
def third(x: int) -> int:
    time.sleep(1)
    return x + 1


@pipeline(
    settings={"docker": DockerSettings(parent_image=IMAGE, skip_build=True)}, enable_cache=False
)
def three_sleeps() -> None:
    """Three one-second steps in a row."""
    third(second(first()))


def _record_wait_returns(path: str, mode: str) -> None:
    from zenml.step_operators import BaseStepOperator

    from k8s_step_operator import job_name
    from k8s_step_operator.integrations.zenml.operator import KubernetesJobStepOperator

    original = BaseStepOperator.wait if mode == "poll" else KubernetesJobStepOperator.wait

    def wait(self: KubernetesJobStepOperator, step_run: object) -> object:
        status = original(self, step_run)  # type: ignore[arg-type]
        returned = time.monotonic()
        job = job_name(
            str(step_run.pipeline_run_id),  # type: ignore[attr-defined]
            str(step_run.name),  # type: ignore[attr-defined]
            str(step_run.id),  # type: ignore[attr-defined]
        )
        with open(path, "a") as f:
            f.write(json.dumps({"job": job, "returned": returned}) + "\n")
        return status

    KubernetesJobStepOperator.wait = wait  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    if os.environ.get("BENCH_WAIT_LOG"):
        _record_wait_returns(os.environ["BENCH_WAIT_LOG"], os.environ.get("BENCH_WAIT", "ours"))
    started = time.monotonic()
    three_sleeps()
    print(json.dumps({"pipeline_seconds": time.monotonic() - started}))
