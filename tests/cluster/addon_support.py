"""Shared code of the tests of the local cluster's add-ons: Kueue, Karpenter and local volumes.

These tests check the cluster itself, so they build plain dicts and talk to the API through the
official client; they do not use the library. ``e2e/cluster.py`` (loaded as the module
``tests/conftest.py`` loads it) supplies the objects the cluster installs: Kueue queues, local
PersistentVolumes, the pools of ``e2e/nodes.yaml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.conftest import load_cluster_module

REPO = Path(__file__).resolve().parents[2]
# Where these tests write what they saw (objects, events) as JSON, for the notes on the signals
# Kueue and Karpenter give: K8SSO_SIGNALS_DIR=dir pytest ...
SIGNALS_DIR = os.environ.get("K8SSO_SIGNALS_DIR", "")


def served(api_client: k8s.ApiClient, group_version: str) -> bool:
    """Whether the API server serves ``group/version`` (a CRD's API)."""
    group, version = group_version.split("/")
    try:
        groups = k8s.ApisApi(api_client).get_api_versions().groups or []
    except ApiException:
        return False
    return any(g.name == group and any(v.version == version for v in g.versions) for g in groups)


def custom(api_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api_client)


def events_for(
    api_client: k8s.ApiClient, namespace: str, kind: str, name: str
) -> list[dict[str, Any]]:
    """The events about one object, oldest first, as plain dicts."""
    items = (
        k8s.CoreV1Api(api_client)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
        )
        .items
    )
    out = [
        {
            "type": e.type,
            "reason": e.reason,
            "message": e.message,
            "source": (e.source.component if e.source else None) or e.reporting_component,
            "count": e.count,
        }
        for e in items
    ]
    return out


def record(name: str, obj: Any) -> None:
    """Keep ``obj`` as ``<K8SSO_SIGNALS_DIR>/<name>.json`` when that directory is set."""
    if not SIGNALS_DIR:
        return
    d = Path(SIGNALS_DIR)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def without_noise(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without managedFields, for reading and recording."""
    obj = json.loads(json.dumps(obj))
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def job(
    name: str,
    *,
    gpus: int = 1,
    resource: str = "nvidia.com/gpu",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    placement: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A one-pod Job asking for ``gpus`` of ``resource``; created unsuspended."""
    container: dict[str, Any] = {
        "name": "main",
        "image": "busybox:1.36",
        "command": ["sh", "-c", "exit 0"],
        "resources": {"limits": {resource: str(gpus)}} if gpus else {},
    }
    if volumes:
        container["volumeMounts"] = [{"name": v["name"], "mountPath": "/data"} for v in volumes]
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    spec.update(placement or {})
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"annotations": annotations or {}}, "spec": spec},
        },
    }


def job_condition(api_client: k8s.ApiClient, namespace: str, name: str, kind: str) -> Any:
    j = k8s.BatchV1Api(api_client).read_namespaced_job(name, namespace)
    for c in j.status.conditions or []:
        if c.type == kind and c.status == "True":
            return c
    return None


def job_pods(api_client: k8s.ApiClient, namespace: str, name: str) -> list[Any]:
    return list(
        k8s.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"job-name={name}")
        .items
    )


def rest(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    query: list[tuple[str, str]] | None = None,
) -> Any:
    """One REST call through the client's connection and credentials; the decoded body."""
    params = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = api_client.call_api(*params)
    data = resp.read()
    if resp.status >= 400:
        raise ApiException(status=resp.status, reason=resp.reason, http_resp=resp)
    return json.loads(data) if data else None


def apply(api_client: k8s.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply one object (any kind the cluster script knows the path of)."""
    path = load_cluster_module().addons.object_path(obj)
    result: dict[str, Any] = rest(
        api_client,
        "PATCH",
        path,
        obj,
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", "k8sso-tests"), ("force", "true")],
    )
    return result


def delete(api_client: k8s.ApiClient, obj: dict[str, Any]) -> None:
    """Delete one object; gone already is fine."""
    try:
        rest(api_client, "DELETE", load_cluster_module().addons.object_path(obj))
    except ApiException as e:
        if e.status != 404:
            raise
