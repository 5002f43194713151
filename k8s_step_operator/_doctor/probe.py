"""Doctor's questions to the API server, asked as the identity the pipeline uses.

The only module of doctor that talks to the API, and only through ``_kube.client.call`` (one
retry policy, one translation of the client's errors). It fetches JSON and hands it to the pure
builders of ``report`` and ``kueue``:

- a SelfSubjectAccessReview per permission of ``permissions``;
- the nodes, the namespace and its ResourceQuotas: extras that a least-privilege identity may not
  read, and then the report says so instead of failing;
- Kueue, when the API server serves kueue.x-k8s.io: the namespace's LocalQueues and the
  ClusterQueues they point to, in v1beta2 when served, else v1beta1.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from k8s_step_operator._doctor.kueue import (
    KUEUE_GROUP,
    KueueReport,
    build_kueue,
    pick_version,
    served_versions,
)
from k8s_step_operator._doctor.permissions import (
    AUTOSCALER_PERMISSIONS,
    KUEUE_PERMISSIONS,
    NODE_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    Permission,
)
from k8s_step_operator._doctor.report import AccessCheck, DoctorReport, build_report
from k8s_step_operator._errors import ForbiddenError, NotFoundError
from k8s_step_operator._job.kube_syntax import check_dns_label
from k8s_step_operator._kube.client import call, read_json
from k8s_step_operator._objects import (
    APIGroupList,
    ClusterQueue,
    LocalQueue,
    Namespace,
    Node,
    ObjectList,
    ResourceQuota,
    SelfSubjectAccessReview,
)

__all__ = ["probe_kueue", "run_doctor"]

log = logging.getLogger(__name__)

# Retries stop much sooner than the library's default: doctor is interactive.
_RETRY_BUDGET = 5.0


def _get_json(operation: str, fn: Callable[..., Any], *args: Any) -> Any:
    """The server's JSON answer; the caller names its type."""
    response = call(operation, fn, *args, _preload_content=False, budget=_RETRY_BUDGET)
    return read_json(response)


def _check(authz: k8s.AuthorizationV1Api, perm: Permission, namespace: str) -> AccessCheck:
    attributes = {"verb": perm.verb, "group": perm.group, "resource": perm.resource}
    if not perm.cluster_scoped:
        attributes["namespace"] = perm.namespace or namespace
    if perm.name:
        attributes["name"] = perm.name
    if perm.subresource:
        attributes["subresource"] = perm.subresource
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    review: SelfSubjectAccessReview = _get_json(
        f"review {perm.describe(namespace)}", authz.create_self_subject_access_review, body
    )
    status = review.get("status", {})
    reason = str(status.get("reason") or status.get("evaluationError") or "")
    allowed = bool(status.get("allowed")) and not status.get("denied")
    return AccessCheck(perm, allowed, reason)


def _api_groups(api_client: k8s.ApiClient) -> APIGroupList:
    groups: APIGroupList = _get_json("list API groups", k8s.ApisApi(api_client).get_api_versions)
    return groups


def probe_kueue(
    api_client: k8s.ApiClient, namespace: str, served: tuple[str, ...] | None
) -> KueueReport:
    """Read the namespace's LocalQueues and their ClusterQueues, as far as this identity may.

    Args:
        api_client: The client.
        namespace: The namespace of the steps.
        served: The versions of kueue.x-k8s.io served (``kueue.served_versions``), or ``None``.

    Raises:
        ApiError: The API server could not be asked (unreachable, or a refusal other than 403).
    """
    version = pick_version(served) if served is not None else None
    if version is None:
        return build_kueue(namespace, served=served, local_queues=None)
    custom = k8s.CustomObjectsApi(api_client)
    try:
        listed: ObjectList[LocalQueue] = _get_json(
            f"list localqueues.{KUEUE_GROUP} in {namespace}",
            custom.list_namespaced_custom_object,
            KUEUE_GROUP,
            version,
            namespace,
            "localqueues",
        )
    except ForbiddenError:
        return build_kueue(
            namespace,
            served=served,
            local_queues=None,
            detail=f"this identity may not list localqueues.{KUEUE_GROUP} in namespace {namespace}",
        )
    except NotFoundError:
        return build_kueue(
            namespace,
            served=None,
            local_queues=None,
            detail=f"{KUEUE_GROUP}/{version} is served but has no LocalQueue resource",
        )
    local_queues = list(listed.get("items") or [])
    names = sorted({str(q.get("spec", {}).get("clusterQueue", "")) for q in local_queues})
    cluster_queues: list[ClusterQueue] = []
    unreadable: dict[str, str] = {}
    for name in filter(None, names):
        try:
            cluster_queues.append(
                _get_json(
                    f"get clusterqueue.{KUEUE_GROUP} {name}",
                    custom.get_cluster_custom_object,
                    KUEUE_GROUP,
                    version,
                    "clusterqueues",
                    name,
                )
            )
        except ForbiddenError:
            unreadable[name] = f"this identity may not get clusterqueues.{KUEUE_GROUP}"
        except NotFoundError:
            pass  # reported as "does not exist"
    return build_kueue(
        namespace,
        served=served,
        local_queues=local_queues,
        cluster_queues=cluster_queues,
        unreadable=unreadable,
    )


def run_doctor(
    api_client: k8s.ApiClient, namespace: str, *, kueue: bool | None = None
) -> DoctorReport:
    """Check permissions, GPU inventory, Pod Security, GPU quota and Kueue as ``api_client``.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` authenticated as the pipeline's identity.
        namespace: The namespace the steps run in.
        kueue: ``True`` requires the Kueue Workload permissions; ``None`` checks them as
            optional when the cluster serves Kueue; ``False`` skips them and the Kueue section.

    Returns:
        The report.

    Raises:
        ConfigurationError: ``namespace`` is not a valid namespace name.
        ApiError: The API server could not be asked (unreachable, or refused the reviews).
    """
    check_dns_label("namespace", namespace)
    served = served_versions(_api_groups(api_client)) if kueue is not False else None
    permissions: list[Permission] = [
        *OPERATOR_PERMISSIONS,
        *NODE_PERMISSIONS,
        *AUTOSCALER_PERMISSIONS,
    ]
    if kueue:
        permissions += KUEUE_PERMISSIONS
    elif kueue is None and served is not None:
        permissions += [dataclasses.replace(p, required=False) for p in KUEUE_PERMISSIONS]

    authz = k8s.AuthorizationV1Api(api_client)
    checks = [_check(authz, perm, namespace) for perm in permissions]

    core = k8s.CoreV1Api(api_client)
    notes: list[str] = []
    problems: list[str] = []
    nodes: list[Node] | None = None
    namespace_obj: Namespace | None = None
    quotas: list[ResourceQuota] | None = None
    try:
        node_list: ObjectList[Node] = _get_json("list nodes", core.list_node)
        nodes = node_list.get("items") or []
    except ForbiddenError as e:
        notes.append(f"GPU inventory skipped: {e.message}")
    try:
        namespace_obj = _get_json(f"read namespace {namespace}", core.read_namespace, namespace)
    except ForbiddenError:
        notes.append(
            f"Pod Security level unknown: this identity may not get namespace {namespace} "
            "(run doctor as an admin to see it)"
        )
    except NotFoundError:
        problems.append(f"namespace {namespace} does not exist")
    try:
        quota_list: ObjectList[ResourceQuota] = _get_json(
            f"list resourcequotas in {namespace}", core.list_namespaced_resource_quota, namespace
        )
        quotas = quota_list.get("items") or []
    except ForbiddenError:
        notes.append(
            f"GPU quota unknown: this identity may not list resourcequotas in {namespace} "
            "(run doctor as an admin to see it)"
        )
    kueue_report = probe_kueue(api_client, namespace, served) if kueue is not False else None
    report = build_report(
        namespace,
        checks,
        nodes=nodes,
        namespace_obj=namespace_obj,
        quotas=quotas,
        problems=problems,
        notes=notes,
        kueue=kueue_report,
    )
    for perm in report.missing:
        log.warning("missing permission: %s", perm.describe(namespace))
    return report
