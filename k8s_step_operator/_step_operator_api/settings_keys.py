"""Where a step's settings for a component live, and the keys that were clearly meant for it.

A step's settings are a mapping from keys to each component's settings: ZenML's
``"<type>:<component name>"`` (read first) or ``"<type>.<flavor>"``. A key that misses both by a
character (``step_operator.kubernetes-job``), lacks its type (``kubernetes_job``), or names
another step operator (``step_operator:gpu-jobz``) used to be read by nobody: its ``gpu_type``
vanished and the step ran on any GPU node. ``misdirected_keys`` finds such keys, so that the
component can refuse them (or, where other components' settings pass legitimately, as under
ZenML, warn) and name the keys that would work.

Pure: strings in, strings out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

__all__ = ["GENERAL_SETTINGS_KEYS", "component_keys", "misdirected_keys", "wrong_key_message"]

# ZenML's settings that belong to no component.
GENERAL_SETTINGS_KEYS = frozenset({"resources", "docker", "deployment"})

_SEPARATORS = re.compile(r"[-.:\s_]+")


def _norm(text: str) -> str:
    return _SEPARATORS.sub("_", text.strip().lower()).strip("_")


def component_keys(component_type: str, flavor: str, name: str) -> tuple[str, str, str]:
    """The keys a component reads, as ZenML resolves them.

    ``<type>:<name>``, ``<type>.<flavor>`` and ``<type>`` alone (ZenML's shortcut for the
    stack's component of that type); a step sets one of them.
    """
    return f"{component_type}:{name}", f"{component_type}.{flavor}", component_type


def _close(a: str, b: str) -> bool:
    return bool(a) and bool(b) and difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


def misdirected_keys(keys: Iterable[str], component_type: str, flavor: str, name: str) -> list[str]:
    """The keys clearly meant for a component of this type that it does not read.

    A key is clearly meant for one when it starts with the component type however spelled
    (``step_operator``, ``step-operator``, ``StepOperator``), or is (close to) the flavor, the
    component's name or one of the component's keys with the type left out or misspelled.
    Its own keys and ZenML's general settings (``resources``, ``docker``...) are not.
    """
    own = set(component_keys(component_type, flavor, name))
    kind = _norm(component_type)
    candidates = {_norm(k) for k in (*own, flavor, name)} - {kind}
    found: list[str] = []
    for key in keys:
        if not isinstance(key, str) or key in own or key in GENERAL_SETTINGS_KEYS:
            continue
        norm = _norm(key)
        squashed = norm.replace("_", "")
        if (
            squashed.startswith(kind.replace("_", ""))
            or norm in candidates
            or any(_close(norm, c) for c in candidates)
        ):
            found.append(key)
    return found


def wrong_key_message(key: str, keys_that_work: Sequence[str]) -> str:
    """What to say of a misdirected ``key``: the keys that would work (an ``accepted`` text)."""
    works = " or ".join(repr(k) for k in keys_that_work)
    return (
        f"a settings key this step operator reads, {works}: settings under {key!r} are read "
        "by no component of this name or flavor"
    )
