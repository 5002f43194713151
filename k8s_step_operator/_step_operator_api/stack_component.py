"""Stack components and flavors, reduced to what a step operator needs from ZenML's.

A component is built from a flavor's config (cluster-wide defaults). A step may override the
component's settings under the key ``"<component type>.<flavor name>"`` in its settings; the
config class inherits the settings class, so the merge is a plain field-by-field override.
"""

from __future__ import annotations

import builtins
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, ValidationError

from k8s_step_operator._errors import ConfigurationError, configuration_error
from k8s_step_operator._step_operator_api.base_settings import BaseSettings
from k8s_step_operator._step_operator_api.enums import StackComponentType
from k8s_step_operator._step_operator_api.settings_keys import (
    component_keys,
    misdirected_keys,
    wrong_key_message,
)
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


def _type_name(value: object) -> str:
    return builtins.type(value).__name__


def _check_arguments(cls: builtins.type[StackComponent], **args: Any) -> UUID | None:
    """Refuse an argument of the wrong type, naming it; returns the id (a UUID string parsed).

    The constructor's order is ZenML's (``name, id, config, ...``): a config passed second, as
    ``Operator("gpu", config)``, lands in ``id``, and would otherwise leave the component with
    a default config and the config as its id.
    """
    where = cls.__name__
    expected_config = cls.config_class
    config = args["config"]
    if not isinstance(config, expected_config):
        raise ConfigurationError(
            f"{where}(config=...)",
            f"a {expected_config.__name__}"
            + (
                f" (from a mapping: {expected_config.__name__}(**mapping))"
                if isinstance(config, Mapping)
                else ""
            ),
            _type_name(config),
        )
    name = args["name"]
    if not isinstance(name, str) or not name:
        hint = (
            f"; pass the config by name: {where}(config=...)"
            if isinstance(name, StackComponentConfig)
            else ""
        )
        raise ConfigurationError(
            f"{where}(name=...)", f"a non-empty string{hint}", _type_name(name)
        )
    raw_id = args["id"]
    if isinstance(raw_id, StackComponentConfig):
        raise ConfigurationError(
            f"{where}(id=...)",
            "a UUID or None: the second positional argument is the id, as in ZenML's "
            f"StackComponent; pass the config by name: {where}({name!r}, config=...)",
            _type_name(raw_id),
        )
    component_id: UUID | None = None
    if isinstance(raw_id, str):
        try:
            component_id = UUID(raw_id)
        except ValueError:
            raise ConfigurationError(f"{where}(id=...)", "a UUID or None", raw_id) from None
    elif raw_id is not None and not isinstance(raw_id, UUID):
        raise ConfigurationError(f"{where}(id=...)", "a UUID or None", _type_name(raw_id))
    else:
        component_id = raw_id
    checks: tuple[tuple[str, tuple[builtins.type[Any], ...], str], ...] = (
        ("flavor", (str,), "a string"),
        ("type", (StackComponentType,), "a StackComponentType"),
        ("user", (UUID, builtins.type(None)), "a UUID or None"),
        ("workspace", (UUID, builtins.type(None)), "a UUID or None"),
        ("created", (datetime, builtins.type(None)), "a datetime or None"),
        ("updated", (datetime, builtins.type(None)), "a datetime or None"),
        ("labels", (Mapping, builtins.type(None)), "a mapping or None"),
        ("connector", (UUID, builtins.type(None)), "a UUID or None"),
        ("connector_resource_id", (str, builtins.type(None)), "a string or None"),
    )
    for arg, types, accepted in checks:
        if not isinstance(args[arg], types):
            raise ConfigurationError(f"{where}({arg}=...)", accepted, _type_name(args[arg]))
    return component_id


def _step_config(container: object) -> StepConfiguration:
    """The step's configuration from what ``get_settings`` was given (ZenML's objects work)."""
    if isinstance(container, StepConfiguration):
        return container
    config = getattr(container, "config", None)
    if isinstance(getattr(config, "settings", None), Mapping):
        return cast(StepConfiguration, config)
    if isinstance(getattr(container, "settings", None), Mapping):
        return cast(StepConfiguration, container)
    raise ConfigurationError(
        "info", "a StepRunInfo or a StepConfiguration", builtins.type(container).__name__
    )


class StackComponent(ABC):  # noqa: B024 - abstract by intent, concrete parts shared
    """A configured instance of a flavor, with the constructor of ZenML's ``StackComponent``.

    Standalone, only ``name`` and ``config`` matter: the other arguments are what a ZenML
    server records about a component (owner, timestamps, labels, service connector) and default
    to empty values.

    Attributes:
        config_class: The config a component of this class takes (checked at construction).
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

    config_class: ClassVar[builtins.type[StackComponentConfig]] = StackComponentConfig

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
        where = builtins.type(self).__name__
        if config is None:
            raise ConfigurationError(f"{where}.config", "a config", None)
        if type is None:
            raise ConfigurationError(f"{where}.type", "a StackComponentType", None)
        id = _check_arguments(
            builtins.type(self),
            name=name,
            id=id,
            config=config,
            flavor=flavor,
            type=type,
            user=user,
            workspace=workspace,
            created=created,
            updated=updated,
            labels=labels,
            connector=connector,
            connector_resource_id=connector_resource_id,
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
        """Where a step's settings for this component live: ``"<type>.<flavor>"``.

        ``"<type>:<name>"`` (read first) and ``"<type>"`` work too (``settings_keys``).
        """
        return f"{self.type.value}.{self.flavor}"

    @property
    def settings_keys(self) -> tuple[str, str, str]:
        """Every key a step's settings for this component may live under, in ZenML's order."""
        return component_keys(self.type.value, self.flavor, self.name)

    def _settings_key_of(self, settings: Mapping[str, Any]) -> str:
        """The key this component's settings are under (a key none of the settings use: none).

        Raises:
            ConfigurationError: If a key is clearly meant for a step operator but is none of
                this one's, or two of its keys are set.
        """
        keys = self.settings_keys
        wrong = misdirected_keys(settings, self.type.value, self.flavor, self.name)
        if wrong:
            raise ConfigurationError(
                f"settings[{wrong[0]!r}]", wrong_key_message(wrong[0], keys[:2]), None
            )
        present = [k for k in keys if k in settings]
        if len(present) > 1:
            raise ConfigurationError(
                f"settings[{present[1]!r}]",
                f"this component's settings under one key, not both {present[0]!r} and "
                f"{present[1]!r}",
                None,
            )
        return present[0] if present else keys[1]

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
        step_config = _step_config(container)
        key = self._settings_key_of(step_config.settings)
        cache = self._settings_cache()
        base = cache.get(settings_class)
        if base is None:
            # The config is frozen: what it sets is read once.
            base = self.config.model_dump(
                include=set(settings_class.model_fields), exclude_unset=True
            )
            cache[settings_class] = base
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
                f"settings[{key!r}]",
                f"a mapping or a {settings_class.__name__}",
                builtins.type(raw).__name__,
            )
        merged = {**base, **override}
        try:
            seen: Hashable = (settings_class, _canonical(merged))
        except TypeError:  # a value only the model can read (an object): validated every time
            seen = None
        if seen is not None and (found := cache.get(seen)) is not None:
            return cast(BaseSettings, found)
        try:
            settings = settings_class.model_validate(merged)
        except ValidationError as exc:
            raise configuration_error(
                exc, f"settings[{key!r}]", secret_fields=("secret_env",)
            ) from exc
        if seen is not None:
            with _CACHE_LOCK:
                cache[seen] = settings
                while len(cache) > _SETTINGS_CACHE_SIZE:
                    del cache[next(iter(cache))]
        return settings

    def _settings_cache(self) -> dict[Hashable, Any]:
        """This component's validated settings by their input, and its config's fields by class."""
        cache = self.__dict__.get("_validated_settings")
        if cache is None:
            with _CACHE_LOCK:
                cache = self.__dict__.setdefault("_validated_settings", {})
        return cast(dict[Hashable, Any], cache)


# Validated settings kept per component, by their merged input. The steps of a pipeline share a
# few configurations; a validation is the deepest call a step's thread makes, and the stack pages
# it touches stay resident while the step waits (thousands of threads, tens of KB each). Settings
# are frozen, so one object serves every step that asks for the same.
_SETTINGS_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def _canonical(value: Any) -> Hashable:
    """A hashable, exact form of a settings input; ``TypeError`` for what JSON cannot hold."""
    if value is None or type(value) in (str, int, float, bool):
        return (type(value).__name__, value)
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((_canonical(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_canonical(v) for v in value))
    raise TypeError(type(value).__name__)


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
