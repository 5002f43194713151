"""Stack components and flavors, reduced to what a step operator needs from ZenML's.

A component is built from a flavor's config (cluster-wide defaults). A step may override the
component's settings under the key ``"<component type>.<flavor name>"`` in its settings; the
config class inherits the settings class, so the merge is a plain field-by-field override.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, ValidationError

from k8s_step_operator._errors import ConfigurationError, configuration_error
from k8s_step_operator._step_operator_api.base_settings import BaseSettings
from k8s_step_operator._step_operator_api.enums import StackComponentType
from k8s_step_operator._step_operator_api.step_run_info import StepConfiguration, StepRunInfo

__all__ = ["Flavor", "StackComponent", "StackComponentConfig"]


class StackComponentConfig(BaseModel):
    """Base of every component config: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @property
    def is_remote(self) -> bool:
        """Whether the component runs work away from the caller's machine."""
        return False

    @property
    def is_local(self) -> bool:
        """Whether the component runs work on the caller's machine."""
        return False


class StackComponent(ABC):  # noqa: B024 - abstract by intent, concrete parts shared
    """A configured instance of a flavor, with the constructor of ZenML's ``StackComponent``.

    Standalone, only ``name`` and ``config`` matter: the other arguments are what a ZenML
    server records about a component (owner, timestamps, labels, service connector) and default
    to empty values.

    Attributes:
        name: The component's name.
        id: The component's id.
        flavor: The flavor name, used in the settings key.
        type: The component type, used in the settings key.
        user: The id of the user who registered it, if known.
        workspace: The id of its workspace (project), if known.
        created: When it was registered.
        updated: When it was last updated.
        labels: Free-form labels.
        connector_requirements: What service connector it needs, if any.
        connector: The id of its service connector, if any.
        connector_resource_id: The resource the connector gives access to, if any.
    """

    def __init__(
        self,
        name: str,
        id: UUID | None = None,
        config: StackComponentConfig | None = None,
        flavor: str = "",
        type: StackComponentType | None = None,
        user: UUID | None = None,
        workspace: UUID | None = None,
        created: datetime | None = None,
        updated: datetime | None = None,
        labels: dict[str, Any] | None = None,
        connector_requirements: Any = None,
        connector: UUID | None = None,
        connector_resource_id: str | None = None,
    ) -> None:
        if config is None:
            raise ConfigurationError(f"{builtins.type(self).__name__}.config", "a config", None)
        if type is None:
            raise ConfigurationError(
                f"{builtins.type(self).__name__}.type", "a StackComponentType", None
            )
        now = datetime.now(UTC)
        self.name = name
        self.id = id or uuid4()
        self._config = config
        self.flavor = flavor
        self.type = type
        self.user = user
        self.workspace = workspace
        self.created = created or now
        self.updated = updated or self.created
        self.labels = dict(labels or {})
        self.connector_requirements = connector_requirements
        self.connector = connector
        self.connector_resource_id = connector_resource_id

    @property
    def config(self) -> StackComponentConfig:
        """The component's configuration."""
        return self._config

    @property
    def settings_class(self) -> type[BaseSettings] | None:
        """The settings a step may override for this component, or None."""
        return None

    @property
    def settings_key(self) -> str:
        """Where a step's settings for this component live: ``"<type>.<flavor>"``."""
        return f"{self.type.value}.{self.flavor}"

    def get_settings(self, container: StepRunInfo | StepConfiguration) -> BaseSettings:
        """The step's settings for this component, merged over the component's config.

        Fields the step sets win; every other field comes from the component config (only
        fields set on it explicitly; the rest keep the settings' defaults).

        Args:
            container: The step run info, or the step's configuration.

        Raises:
            ConfigurationError: If the component has no settings class, or the merged settings
                are invalid (the field is named as ``settings['<key>'].<field>``).
        """
        settings_class = self.settings_class
        if settings_class is None:
            raise ConfigurationError(
                f"{type(self).__name__}.settings_class", "a settings class", None
            )
        step_config = container.config if isinstance(container, StepRunInfo) else container
        key = self.settings_key
        base = self.config.model_dump(include=set(settings_class.model_fields), exclude_unset=True)
        raw = step_config.settings.get(key)
        override: dict[str, Any]
        if raw is None:
            override = {}
        elif isinstance(raw, BaseModel):
            override = raw.model_dump(exclude_unset=True)
        elif isinstance(raw, Mapping):
            override = dict(raw)
        else:
            raise ConfigurationError(
                f"settings[{key!r}]", f"a mapping or a {settings_class.__name__}", type(raw)
            )
        try:
            return settings_class.model_validate({**base, **override})
        except ValidationError as exc:
            raise configuration_error(
                exc, f"settings[{key!r}]", secret_fields=("secret_env",)
            ) from exc


class Flavor(ABC):
    """Names a component implementation and its config class."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The flavor's name."""

    @property
    @abstractmethod
    def type(self) -> StackComponentType:
        """The component type this flavor implements."""

    @property
    @abstractmethod
    def config_class(self) -> builtins.type[StackComponentConfig]:
        """The flavor's config class."""

    @property
    @abstractmethod
    def implementation_class(self) -> builtins.type[StackComponent]:
        """The flavor's implementation class."""

    @property
    def docs_url(self) -> str | None:
        """Where the flavor is documented."""
        return None
