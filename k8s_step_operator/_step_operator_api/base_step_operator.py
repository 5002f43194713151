"""The step-operator abstraction ZenML users know: run one step somewhere else, synchronously.

``launch(info, entrypoint_command, environment)`` must run ``entrypoint_command`` with
``environment`` and return only when the step finished, raising when it did not succeed.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from k8s_step_operator._step_operator_api.entrypoint_configuration import (
    StepOperatorEntrypointConfiguration,
)
from k8s_step_operator._step_operator_api.enums import StackComponentType
from k8s_step_operator._step_operator_api.stack_component import (
    Flavor,
    StackComponent,
    StackComponentConfig,
)

if TYPE_CHECKING:
    from k8s_step_operator._step_operator_api.step_run_info import StepRunInfo

__all__ = ["BaseStepOperator", "BaseStepOperatorConfig", "BaseStepOperatorFlavor"]


class BaseStepOperatorConfig(StackComponentConfig):
    """Base config of every step operator (frozen pydantic model)."""


class BaseStepOperator(StackComponent, ABC):
    """Runs individual steps in another environment than the orchestrator's."""

    TYPE: ClassVar[StackComponentType] = StackComponentType.STEP_OPERATOR
    config_class: ClassVar[builtins.type[StackComponentConfig]] = BaseStepOperatorConfig

    def __init__(
        self,
        name: str,
        id: UUID | None = None,
        config: BaseStepOperatorConfig | None = None,
        flavor: str = "",
        type: StackComponentType = StackComponentType.STEP_OPERATOR,
        user: UUID | None = None,
        workspace: UUID | None = None,
        created: datetime | None = None,
        updated: datetime | None = None,
        labels: dict[str, Any] | None = None,
        connector_requirements: Any = None,
        connector: UUID | None = None,
        connector_resource_id: str | None = None,
    ) -> None:
        """Create the step operator ``name`` of flavor ``flavor`` from ``config``.

        The arguments are ZenML's ``StackComponent``'s, in its order; only ``name`` and
        ``config`` are needed standalone.
        """
        super().__init__(
            name,
            id,
            config,
            flavor,
            type,
            user,
            workspace,
            created,
            updated,
            labels,
            connector_requirements,
            connector,
            connector_resource_id,
        )

    @property
    def config(self) -> BaseStepOperatorConfig:
        """The step operator's configuration."""
        config = self._config
        assert isinstance(config, BaseStepOperatorConfig)  # guaranteed by the flavor
        return config

    @property
    def entrypoint_config_class(self) -> type[StepOperatorEntrypointConfiguration]:
        """The entrypoint configuration whose command ``launch`` receives."""
        return StepOperatorEntrypointConfiguration

    @abstractmethod
    def launch(
        self,
        info: StepRunInfo,
        entrypoint_command: list[str],
        environment: dict[str, str],
    ) -> None:
        """Run the step synchronously.

        Args:
            info: The step run to execute.
            entrypoint_command: The command that runs the step in its environment.
            environment: Environment variables the step needs.
        """


class BaseStepOperatorFlavor(Flavor):
    """Base flavor of step operators."""

    @property
    def type(self) -> StackComponentType:
        """Always ``StackComponentType.STEP_OPERATOR``."""
        return StackComponentType.STEP_OPERATOR

    @property
    def config_class(self) -> builtins.type[BaseStepOperatorConfig]:
        """The step operator's config class."""
        return BaseStepOperatorConfig

    @property
    @abstractmethod
    def implementation_class(self) -> builtins.type[BaseStepOperator]:
        """The step operator class."""
