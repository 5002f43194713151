"""The base of every settings model: frozen, strict about unknown keys.

Settings travel from YAML files, CLI flags and Python code into the Job; a typo in a key must be
an error naming the key, not a silently ignored default, hence ``extra="forbid"``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["BaseSettings"]


class BaseSettings(BaseModel):
    """Base class for settings attached to a step or a stack component (immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
