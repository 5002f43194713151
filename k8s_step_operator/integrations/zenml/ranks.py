"""A ZenML Python step on several nodes: every rank runs the step function, rank 0 is the step.

The step operator's ``entrypoint_config_class`` is ZenML's extension point for what a step's
container runs; this is ours. Every rank of a step with ``num_nodes = N`` runs the same command
with the same environment, and reads its rank from ``NODE_RANK`` (set by the operator from the
pod's completion index; a step of one pod has none, and is rank 0):

* rank 0 is ZenML's step run, exactly as ZenML's own ``StepOperatorEntrypointConfiguration``
  runs it: it resolves the inputs, calls the function inside the step context, stores the
  outputs, the logs and the status, and runs the hooks;
* every other rank is a worker of that step run: it reads the step run (nothing is written to
  ZenML's store), loads the same input artifacts with the same materializers, and calls the same
  function with them; what it returns is dropped. A worker has no step context: ZenML calls
  inside the step (``log_metadata``, ``save_artifact``, ``get_step_context``) belong in rank 0's
  branch (``if int(os.environ.get("NODE_RANK", "0")) == 0``).

The function sees ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and the others on
every rank, so ``torch.distributed.init_process_group("gloo")`` (or NCCL) joins the ranks
without a launcher when each rank runs one process.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any
from uuid import UUID

from zenml.client import Client
from zenml.config.step_configurations import Step
from zenml.step_operators.step_operator_entrypoint_configuration import (
    STEP_RUN_ID_OPTION,
    StepOperatorEntrypointConfiguration,
)

if TYPE_CHECKING:
    from zenml.models import PipelineSnapshotResponse, StepRunResponse

__all__ = ["RANK_VARIABLE", "RankEntrypointConfiguration", "current_rank", "run_as_worker"]

logger = logging.getLogger(__name__)

# Set on every rank by the operator (the pod's completion index).
RANK_VARIABLE = "NODE_RANK"


def current_rank(environ: dict[str, str] | None = None) -> int:
    """This pod's rank: ``NODE_RANK``, 0 when unset (a step of one pod).

    Raises:
        ValueError: If ``NODE_RANK`` is set to something other than a whole number.
    """
    value = (os.environ if environ is None else environ).get(RANK_VARIABLE, "").strip()
    if not value:
        return 0
    rank = int(value)
    if rank < 0:
        raise ValueError(f"{RANK_VARIABLE} must be 0 or more, got {value!r}")
    return rank


class RankEntrypointConfiguration(StepOperatorEntrypointConfiguration):
    """ZenML's step-operator entrypoint, with the ranks above 0 running as workers."""

    @property
    def rank(self) -> int:
        """This pod's rank (0: the step run itself)."""
        return current_rank()

    @property
    def step_run(self) -> StepRunResponse:
        """The step run; read only on a worker (ZenML's rank 0 may mark it running)."""
        if self.rank == 0:
            return super().step_run
        if self._step_run is None:
            step_run_id = UUID(self.entrypoint_args[STEP_RUN_ID_OPTION])
            self._step_run = Client().zen_store.get_run_step(step_run_id)
        return self._step_run

    def _run_step(self, step: Step, snapshot: PipelineSnapshotResponse) -> None:
        """Rank 0 runs the step run as ZenML does; the other ranks run it as workers."""
        rank = self.rank
        if rank == 0:
            super()._run_step(step, snapshot)
            return
        logger.info(
            "rank %d: running step %s as a worker of step run %s (rank 0 publishes)",
            rank,
            step.config.name,
            self.step_run.id,
        )
        run_as_worker(step, self.step_run)


def run_as_worker(step: Step, step_run: StepRunResponse) -> Any:
    """Call the step's function with the step run's inputs, outside any step context.

    Returns:
        What the function returned (a worker drops it).
    """
    from zenml.orchestrators import input_utils
    from zenml.orchestrators.step_runner import StepRunner
    from zenml.steps.utils import get_resolved_signature

    client = Client()
    pipeline_run = client.get_pipeline_run(step_run.pipeline_run_id)
    # As rank 0 does first: parameters of lazy loaders join the step's configuration.
    input_utils.resolve_step_inputs(step=step, pipeline_run=pipeline_run)
    runner = StepRunner(step=step, stack=client.active_stack)
    instance = runner._load_step()
    signature = get_resolved_signature(instance.entrypoint)
    params = runner._parse_inputs(signature=signature, input_artifacts=step_run.inputs)
    return instance.call_entrypoint(**params)
