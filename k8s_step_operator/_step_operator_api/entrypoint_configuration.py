"""How the command that runs a step inside the container is built and read back.

Mirrors ZenML's ``BaseEntrypointConfiguration`` and ``StepEntrypointConfiguration``: the
launching side calls ``get_entrypoint_command()`` + ``get_entrypoint_arguments(**kwargs)``; the
container runs ``python -m k8s_step_operator.entrypoint`` which loads the configuration class,
parses the same options back and calls ``run()``.

Standalone (without a ZenML server) the step is an importable callable named by
``--step_source package.module:function``; it is called without arguments.
"""

from __future__ import annotations

import argparse
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NoReturn

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._step_operator_api.sources import load_source, source_of

__all__ = [
    "DEFAULT_ENTRYPOINT_COMMAND",
    "ENTRYPOINT_CONFIG_SOURCE_OPTION",
    "STEP_NAME_OPTION",
    "STEP_RUN_ID_OPTION",
    "STEP_SOURCE_OPTION",
    "BaseEntrypointConfiguration",
    "StepEntrypointConfiguration",
    "StepOperatorEntrypointConfiguration",
]

logger = logging.getLogger(__name__)

DEFAULT_ENTRYPOINT_COMMAND = ["python", "-m", "k8s_step_operator.entrypoint"]
ENTRYPOINT_CONFIG_SOURCE_OPTION = "entrypoint_config_source"
STEP_NAME_OPTION = "step_name"
STEP_SOURCE_OPTION = "step_source"


def _required(cls: type, kwargs: dict[str, Any], option: str) -> str:
    value = kwargs.get(option)
    if value is None or str(value) == "":
        raise ConfigurationError(
            f"{cls.__name__}.get_entrypoint_arguments({option}=...)",
            "a non-empty value",
            value,
        )
    return str(value)


class BaseEntrypointConfiguration(ABC):
    """Options the entrypoint is called with, and what it runs.

    Attributes:
        entrypoint_args: The parsed options, by option name.
    """

    def __init__(self, arguments: list[str]) -> None:
        """Parse ``arguments`` (as produced by ``get_entrypoint_arguments``)."""
        self.entrypoint_args: dict[str, Any] = self._parse_arguments(arguments)

    @classmethod
    def get_entrypoint_command(cls) -> list[str]:
        """The command that runs the entrypoint module; append ``get_entrypoint_arguments``."""
        return list(DEFAULT_ENTRYPOINT_COMMAND)

    @classmethod
    def get_entrypoint_options(cls) -> set[str]:
        """The names of every option the entrypoint needs."""
        return {ENTRYPOINT_CONFIG_SOURCE_OPTION}

    @classmethod
    def get_entrypoint_arguments(cls, **kwargs: Any) -> list[str]:
        """The arguments for ``get_entrypoint_command()``, one value for every option.

        Raises:
            ConfigurationError: If a required keyword argument is missing or empty.
        """
        return [f"--{ENTRYPOINT_CONFIG_SOURCE_OPTION}", source_of(cls)]

    @classmethod
    def _parse_arguments(cls, arguments: list[str]) -> dict[str, Any]:
        class _Parser(argparse.ArgumentParser):
            def error(self, message: str) -> NoReturn:
                raise ConfigurationError(
                    "entrypoint arguments",
                    " ".join(f"--{o} <value>" for o in sorted(cls.get_entrypoint_options())),
                    None,
                    detail=message,
                )

        parser = _Parser(prog=cls.__name__, add_help=False)
        for option in sorted(cls.get_entrypoint_options()):
            if option == ENTRYPOINT_CONFIG_SOURCE_OPTION:
                # Consumed by the entrypoint module to choose this class.
                continue
            parser.add_argument(f"--{option}", required=True)
        result, _ = parser.parse_known_args(arguments)
        return vars(result)

    @abstractmethod
    def run(self) -> None:
        """Run what this configuration describes."""


class StepEntrypointConfiguration(BaseEntrypointConfiguration):
    """Runs one step: the callable named by ``--step_source``."""

    @classmethod
    def get_entrypoint_options(cls) -> set[str]:
        """The parent's options plus ``step_name`` and ``step_source``."""
        return super().get_entrypoint_options() | {STEP_NAME_OPTION, STEP_SOURCE_OPTION}

    @classmethod
    def get_entrypoint_arguments(cls, **kwargs: Any) -> list[str]:
        """The parent's arguments plus ``--step_name <name> --step_source <module:function>``."""
        return [
            *super().get_entrypoint_arguments(**kwargs),
            f"--{STEP_NAME_OPTION}",
            _required(cls, kwargs, STEP_NAME_OPTION),
            f"--{STEP_SOURCE_OPTION}",
            _required(cls, kwargs, STEP_SOURCE_OPTION),
        ]

    def load_step(self) -> Callable[[], Any]:
        """Import the step callable.

        Raises:
            ConfigurationError: If the source cannot be imported or is not callable.
        """
        source = str(self.entrypoint_args[STEP_SOURCE_OPTION])
        step = load_source(source, field=f"--{STEP_SOURCE_OPTION}")
        if not callable(step):
            raise ConfigurationError(f"--{STEP_SOURCE_OPTION}", "a callable", source)
        return step  # type: ignore[no-any-return]

    def run(self) -> None:
        """Load the step and run it; its exceptions propagate to the entrypoint."""
        self._run_step(self.load_step())

    def _run_step(self, step: Callable[[], Any]) -> None:
        logger.info("running step %s", self.entrypoint_args[STEP_NAME_OPTION])
        step()


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
