"""Resolve importable sources (``package.module:attr`` or ``package.module.attr``) and back."""

from __future__ import annotations

import importlib
from typing import Any

from k8s_step_operator._errors import ConfigurationError

__all__ = ["load_source", "source_of"]


def load_source(source: str, *, field: str = "source") -> Any:
    """Import the object named by ``source``.

    ``package.module:attr.sub`` names the module explicitly; ``package.module.attr`` tries the
    longest importable module prefix.

    Raises:
        ConfigurationError: If the module cannot be imported or lacks the attribute.
    """
    accepted = "an importable 'package.module:attribute' (or 'package.module.attribute')"
    if not source or source.strip() != source:
        raise ConfigurationError(field, accepted, source)
    if ":" in source:
        module_name, _, attr_path = source.partition(":")
        candidates = [(module_name, attr_path)]
    else:
        parts = source.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    last_error: Exception | None = None
    for module_name, attr_path in candidates:
        if not module_name or not attr_path:
            continue
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" is a reason to try a shorter one.
            if exc.name is not None and module_name.startswith(exc.name):
                last_error = exc
                continue
            raise
        try:
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ConfigurationError(field, accepted, source, detail=str(exc)) from exc
        return obj
    raise ConfigurationError(
        field, accepted, source, detail=str(last_error) if last_error else "no module part"
    )


def source_of(obj: Any) -> str:
    """The ``package.module.QualName`` source path of a class or function."""
    return f"{obj.__module__}.{obj.__qualname__}"
