"""Which environment variables a step may set, and which look like secrets.

Anyone who may read Jobs in the namespace reads every plain environment variable of the pod
spec, so a plain variable that looks like a credential is refused unless the user says so
(``allow_secret_like_env``); secrets go by reference (``secret_env``, ``secret_env_from``) or as
values in the Job's own Secret (``build_job(secret_environment=...)``).

A name looks like a credential when one of its words is a secret word (TOKEN, PASSWORD,
CREDENTIALS, API KEY...). Two things make a variable a switch rather than a credential, whatever
its name says: its value is a flag or a small number (``true``, ``off``, ``0``, ``3600``: too
little to be worth stealing), or its name ends in a flag word (``..._CACHING``, ``..._ENABLED``,
``..._DISABLED``). ZenML sets ``DISABLE_CREDENTIALS_DISK_CACHING=true`` for every step; it is a
switch about credentials, not one. The GPU visibility
variables are the device plugin's to set: a user value could expose every GPU of the node
without requesting any.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.kube_syntax import check_env_name

__all__ = [
    "FORBIDDEN_ENV",
    "SECRET_LIKE_ACCEPTED",
    "check_env_map",
    "check_env_name_allowed",
    "is_secret_like",
]

FORBIDDEN_ENV = frozenset(
    {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
)
_SECRET_WORDS = frozenset(
    {"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS", "PRIVATEKEY"}
)
_SECRET_PAIRS = frozenset({("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("AUTH", "KEY")})
# Values that carry no secret: booleans as people write them, and short whole numbers.
_FLAG_VALUES = frozenset({"", "true", "false", "yes", "no", "on", "off", "y", "n"})
_SMALL_NUMBER = re.compile(r"[+-]?[0-9]{1,10}")
# A last word that makes the name a switch.
_FLAG_WORDS = frozenset({"CACHING", "ENABLED", "DISABLED"})
SECRET_LIKE_ACCEPTED = (
    "a non-secret variable: pass secrets by reference with settings.secret_env "
    "(NAME: {name, key}) or settings.secret_env_from, or set allow_secret_like_env"
)


def is_secret_like(name: str, value: str | None = None) -> bool:
    """Whether a plain variable ``name`` (set to ``value``) looks like it carries a secret.

    Without ``value``, only the name is judged.
    """
    if value is not None and (
        value.strip().lower() in _FLAG_VALUES or _SMALL_NUMBER.fullmatch(value.strip())
    ):
        return False
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name.upper()) if p]
    if parts and parts[-1] in _FLAG_WORDS:
        return False
    if any(p in _SECRET_WORDS for p in parts):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def check_env_name_allowed(field: str, name: object) -> str:
    """``name`` if a step may set it: a valid name, and not a GPU visibility variable.

    Raises:
        ConfigurationError: Naming ``field`` otherwise.
    """
    check_env_name(field, name)  # type: ignore[arg-type]
    assert isinstance(name, str)
    if name in FORBIDDEN_ENV:
        raise ConfigurationError(
            field,
            "no GPU visibility variables: the device plugin sets them for the GPUs requested "
            "(use gpu_count)",
            name,
        )
    return name


def check_env_map(value: object) -> dict[str, str]:
    """A mapping of allowed names to string values; errors name ``['NAME']`` below the field.

    Raises:
        ConfigurationError: If ``value`` is not such a mapping.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError("", "a mapping of variable names to string values", None)
    result: dict[str, str] = {}
    for name, text in value.items():
        field = f"[{name!r}]"
        check_env_name_allowed(field, name)
        if not isinstance(text, str):
            raise ConfigurationError(field, "a string value", type(text).__name__)
        result[name] = text
    return result
