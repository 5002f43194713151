"""The volume sources an override may add, with the fields the API server checks for each.

The sources are the ones a step has a use for; under the restricted profile the fit stage
allows only those Pod Security allows (``restricted.RESTRICTED_VOLUME_TYPES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from k8s_step_operator._job.kube_syntax import check_qualified_name, is_dns_subdomain
from k8s_step_operator._job.overrides.checkers import (
    Check,
    absolute_path,
    boolean,
    choice,
    dns_label,
    dns_subdomain,
    fail,
    fields,
    file_mode,
    integer,
    label_value,
    list_of,
    nonempty,
    qualified_name,
    relative_path,
    secret_key,
    size,
    string,
    string_map,
    unique,
)

__all__ = ["VOLUME_SOURCES", "volume_list", "volume_type"]

_KEY_TO_PATH = fields(
    {"key": secret_key, "path": relative_path(), "mode": file_mode}, required=("key", "path")
)


def _key_paths(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = list_of(_KEY_TO_PATH)(path, value)
    unique(path, items, "path", "each path")
    return items


_DOWNWARD_FIELD = re.compile(r"metadata\.(name|namespace|uid|labels|annotations)")
_DOWNWARD_KEYED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


def _downward_field_path(path: str, value: Any) -> str:
    if isinstance(value, str):
        if _DOWNWARD_FIELD.fullmatch(value):
            return value
        keyed = _DOWNWARD_KEYED_FIELD.fullmatch(value)
        if keyed and check_qualified_name(path, keyed.group(2)):
            return value
    raise fail(
        path,
        "metadata.name, metadata.namespace, metadata.uid, metadata.labels, "
        "metadata.annotations, or metadata.labels['<key>'] / metadata.annotations['<key>']",
        value,
    )


_DOWNWARD_ITEM = fields(
    {
        "path": relative_path(),
        "fieldRef": fields(
            {"fieldPath": _downward_field_path, "apiVersion": choice("v1")},
            required=("fieldPath",),
        ),
        "mode": file_mode,
    },
    required=("path", "fieldRef"),
)


def _downward_items(path: str, value: Any) -> list[Any]:
    items: list[dict[str, Any]] = list_of(_DOWNWARD_ITEM)(path, value)
    unique(path, items, "path", "each path")
    return items


_PROJECTION = fields(
    {
        "configMap": fields(
            {"name": dns_subdomain, "items": _key_paths, "optional": boolean}, required=("name",)
        ),
        "secret": fields(
            {"name": dns_subdomain, "items": _key_paths, "optional": boolean}, required=("name",)
        ),
        "downwardAPI": fields({"items": _downward_items}),
        "serviceAccountToken": fields(
            {
                "path": relative_path(),
                "audience": string,
                # The API server's bounds: at least ten minutes, at most 2^32 seconds.
                "expirationSeconds": integer(600, 2**32),
            },
            required=("path",),
        ),
    },
    one_of=("configMap", "secret", "downwardAPI", "serviceAccountToken"),
)


def _projected(path: str, value: Any) -> dict[str, Any]:
    source: dict[str, Any] = fields(
        {"sources": list_of(_PROJECTION), "defaultMode": file_mode}, required=("sources",)
    )(path, value)
    seen: set[str] = set()
    for i, projection in enumerate(source["sources"]):
        (kind, body), *_ = projection.items()
        entries = [body] if kind == "serviceAccountToken" else body.get("items", [])
        for j, entry in enumerate(entries):
            where = f"{path}.sources[{i}].{kind}" + (
                "" if kind == "serviceAccountToken" else f".items[{j}]"
            )
            if entry["path"] in seen:
                raise fail(f"{where}.path", "a path no other projection uses", entry["path"])
            seen.add(entry["path"])
    return source


_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _access_modes(path: str, value: Any) -> list[str]:
    modes: list[str] = list_of(choice(*_ACCESS_MODES), min_items=1)(path, value)
    if len(set(modes)) != len(modes):
        raise fail(path, "each access mode once")
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        raise fail(path, "ReadWriteOncePod alone (it excludes the other modes)")
    return modes


_STORAGE = fields({"storage": size(positive=True)}, required=("storage",))
_EPHEMERAL = fields(
    {
        "volumeClaimTemplate": fields(
            {
                "metadata": fields(
                    {
                        "labels": string_map(qualified_name, label_value),
                        "annotations": string_map(qualified_name, string),
                    }
                ),
                "spec": fields(
                    {
                        "accessModes": _access_modes,
                        "resources": fields(
                            {"requests": _STORAGE, "limits": _STORAGE}, required=("requests",)
                        ),
                        "storageClassName": dns_subdomain,
                        "volumeMode": choice("Filesystem", "Block"),
                    },
                    required=("accessModes", "resources"),
                ),
            },
            required=("spec",),
        )
    },
    required=("volumeClaimTemplate",),
)


def _csi_driver(path: str, value: Any) -> str:
    # The API server compares the driver name in lower case against the DNS subdomain rule.
    if not isinstance(value, str) or len(value) > 63 or not is_dns_subdomain(value.lower()):
        raise fail(path, "a CSI driver name: a DNS subdomain of at most 63 characters", value)
    return value


_HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
VOLUME_SOURCES: dict[str, Check] = {
    "emptyDir": fields({"medium": choice("", "Memory"), "sizeLimit": size(positive=False)}),
    "configMap": fields(
        {"name": dns_subdomain, "items": _key_paths, "defaultMode": file_mode, "optional": boolean},
        required=("name",),
    ),
    "secret": fields(
        {
            "secretName": dns_subdomain,
            "items": _key_paths,
            "defaultMode": file_mode,
            "optional": boolean,
        },
        required=("secretName",),
    ),
    "persistentVolumeClaim": fields(
        {"claimName": dns_subdomain, "readOnly": boolean}, required=("claimName",)
    ),
    "projected": _projected,
    "downwardAPI": fields({"items": _downward_items, "defaultMode": file_mode}),
    "csi": fields(
        {
            "driver": _csi_driver,
            "readOnly": boolean,
            "fsType": string,
            "volumeAttributes": string_map(nonempty, string),
            "nodePublishSecretRef": fields({"name": dns_subdomain}, required=("name",)),
        },
        required=("driver",),
    ),
    "ephemeral": _EPHEMERAL,
    "hostPath": fields(
        {"path": absolute_path, "type": choice(*_HOST_PATH_TYPES)}, required=("path",)
    ),
    "nfs": fields(
        {"server": nonempty, "path": absolute_path, "readOnly": boolean},
        required=("server", "path"),
    ),
}
_VOLUME = fields(
    {"name": dns_label, **VOLUME_SOURCES},
    required=("name",),
    one_of=tuple(VOLUME_SOURCES),
    what="with a name and one volume source",
)


def volume_type(volume: Mapping[str, Any]) -> str:
    """The source of a checked volume (``emptyDir``, ``hostPath``...)."""
    return next(k for k in volume if k != "name")


def volume_list(path: str, value: Any) -> list[Any]:
    """The pod's volumes: each checked, each name once."""
    volumes: list[dict[str, Any]] = list_of(_VOLUME)(path, value)
    unique(path, volumes, "name", "each volume name")
    return volumes
