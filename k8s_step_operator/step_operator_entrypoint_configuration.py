"""The entrypoint configuration a step operator uses: a step plus its step run id (ZenML's)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from k8s_step_operator.entrypoint_configuration import StepEntrypointConfiguration, _required

__all__ = ["STEP_RUN_ID_OPTION", "StepOperatorEntrypointConfiguration"]

logger = logging.getLogger(__name__)

STEP_RUN_ID_OPTION = "step_run_id"


class StepOperatorEntrypointConfiguration(StepEntrypointConfiguration):
    """Runs a step that a step operator launched; knows the step run it belongs to."""

    @classmethod
    def get_entrypoint_options(cls) -> set[str]:
        """The parent's options plus ``step_run_id``."""
        return super().get_entrypoint_options() | {STEP_RUN_ID_OPTION}

    @classmethod
    def get_entrypoint_arguments(cls, **kwargs: Any) -> list[str]:
        """The parent's arguments plus ``--step_run_id <id>``."""
        return [
            *super().get_entrypoint_arguments(**kwargs),
            f"--{STEP_RUN_ID_OPTION}",
            _required(cls, kwargs, STEP_RUN_ID_OPTION),
        ]

    def _run_step(self, step: Callable[[], Any]) -> None:
        logger.info(
            "running step %s (step run %s)",
            self.entrypoint_args["step_name"],
            self.entrypoint_args[STEP_RUN_ID_OPTION],
        )
        step()
