"""The base of every settings model: frozen, strict about unknown keys, errors naming the field.

Settings travel from YAML files, CLI flags and Python code into the Job; a typo in a key must be
an error naming the key, not a silently ignored default, hence ``extra="forbid"``.

A bad value is a ``ConfigurationError`` naming the field as the user wrote it
(``resource_settings.gpu_count``, ``settings.labels['bad key']``) and saying what is accepted,
raised by the constructor and by ``model_validate``: the same promise as every other input
check of this library. Two details keep existing code working:

* the error is also a pydantic ``ValidationError`` (``SettingsValidationError``), so code that
  caught pydantic's error around a settings model still catches it, and reads the same
  ``errors()``;
* it is chained from pydantic's error, rebuilt with the inputs hidden, so that a traceback never
  prints a value given for a secret field.

Nested models still validate as pydantic models do: a settings model inside another model reports
its errors at their full location in the outer model's error.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from k8s_step_operator._errors import ConfigurationError, configuration_error

__all__ = ["BaseSettings", "SettingsModel", "SettingsValidationError", "whole_number"]


def whole_number(value: object) -> int | None:
    """``value`` as an int if it is a whole number (``2``, ``2.0``, ``"2"``), else ``None``.

    A bool is not one: ``True`` GPUs is a mistake, not 1.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.strip().lstrip("+-").isdecimal():
        return int(value)
    return None


class SettingsValidationError(ConfigurationError, ValidationError):
    """A ``ConfigurationError`` that is also pydantic's ``ValidationError``.

    ``field``, ``accepted`` and ``value`` say what is wrong; ``errors()`` lists every error as
    pydantic found it (inputs of secret fields removed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built by ``_settings_error``: pydantic's constructor gives the errors, and
        # ``ConfigurationError.__init__`` the message.
        pass

    def __str__(self) -> str:
        return BaseException.__str__(self)

    def __repr__(self) -> str:
        return BaseException.__repr__(self)


def _hidden_copy(
    exc: ValidationError, secret_fields: tuple[str, ...], error_class: type[ValidationError]
) -> Any:
    lines: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        secret = bool(error["loc"]) and error["loc"][0] in secret_fields
        lines.append(
            {
                # The message as pydantic rendered it; its type and context are kept.
                "type": PydanticCustomError(error["type"], error["msg"], error.get("ctx")),
                "loc": error["loc"],
                "input": None if secret else error["input"],
            }
        )
    return error_class.from_exception_data(exc.title, lines, hide_input=True)


def _raise_settings_error(
    exc: ValidationError, prefix: str, secret_fields: tuple[str, ...], model: type[BaseModel]
) -> NoReturn:
    described = configuration_error(exc, prefix, secret_fields=secret_fields, model=model)
    error: SettingsValidationError = _hidden_copy(exc, secret_fields, SettingsValidationError)
    ConfigurationError.__init__(
        error, described.field, described.accepted, described.value, detail=described.detail
    )
    raise error from _hidden_copy(exc, secret_fields, ValidationError)


class SettingsModel(BaseModel):
    """A frozen model whose bad input raises ``SettingsValidationError`` naming the field.

    Attributes:
        error_prefix: What the field names start with in errors (``settings``).
        secret_fields: Fields whose input is never shown in an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    error_prefix: ClassVar[str] = "settings"
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except SettingsValidationError:
            raise
        except ValidationError as exc:
            _raise_settings_error(exc, self.error_prefix, self.secret_fields, type(self))

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate ``obj``; a bad value raises ``SettingsValidationError`` naming the field.

        Raises:
            SettingsValidationError: If ``obj`` is not valid (a ``ConfigurationError``).
        """
        try:
            return super().model_validate(obj, *args, **kwargs)
        except SettingsValidationError:
            raise
        except ValidationError as exc:
            _raise_settings_error(exc, cls.error_prefix, cls.secret_fields, cls)

    @classmethod
    def model_validate_json(cls, json_data: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate a JSON document; a bad value raises ``SettingsValidationError``.

        Raises:
            SettingsValidationError: If the document is not valid (a ``ConfigurationError``).
        """
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except SettingsValidationError:
            raise
        except ValidationError as exc:
            _raise_settings_error(exc, cls.error_prefix, cls.secret_fields, cls)


class BaseSettings(SettingsModel):
    """Base class for settings attached to a step or a stack component (immutable).

    Attributes:
        error_keys: What an unknown key's error calls the known ones.
    """

    error_keys: ClassVar[str] = "settings"
