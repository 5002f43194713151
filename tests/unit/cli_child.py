"""``k8s-step-operator run`` in a process of its own, against the in-memory API, for signal tests.

Usage: ``python -m tests.unit.cli_child RUN-ARGUMENTS...`` from the repository root. The operator
reaches the fake instead of a cluster; the runner, its signal handling and the command line are
the real ones, on the real clock. Prints ``JOBS LEFT <n>`` before exiting with ``main``'s code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from k8s_step_operator import cli
from k8s_step_operator._operator import KubernetesJobStepOperator
from k8s_step_operator._runner.ports import SYSTEM_CLOCK
from k8s_step_operator._runner.step_run import StepIdentity, StepRun

from .fakes import FakeKube, SyncWatchers

kube = FakeKube()
watchers = SyncWatchers(kube)


def access(self: KubernetesJobStepOperator) -> FakeKube:
    return kube


def runner(
    self: KubernetesJobStepOperator,
    job: Mapping[str, Any],
    step: StepIdentity,
    settings: Any,
    *,
    companion: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
) -> StepRun:
    return StepRun(
        kube,
        job,
        step=step,
        settings=settings,
        clock=SYSTEM_CLOCK,
        watchers=watchers,
        companion=companion,
        cancel_wait_timeout=5.0,
    )


KubernetesJobStepOperator.access = access  # type: ignore[assignment,method-assign]
KubernetesJobStepOperator._runner = runner  # type: ignore[method-assign]

if __name__ == "__main__":
    code = cli.main(sys.argv[1:])
    print(f"JOBS LEFT {len(kube.store['jobs'])}", flush=True)
    sys.exit(code)
