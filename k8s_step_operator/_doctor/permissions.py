"""The permissions the step operator uses, as doctor asks for them and admins grant them.

One table, kept equal to what the chart's Role and ClusterRole grant (a unit test compares them):
the required verbs on Jobs, pods, pods/log and events in the steps' namespace; creating Secrets
there (optional: only steps with secret environment values, such as ZenML's store API token, need
it; each such Secret is owned by its Job); creating Services there (optional: only steps on
several nodes need it, for the headless Service that names their ranks, owned by the Job); nodes
cluster-wide (optional: the fit check and the GPU
inventory are skipped without them); the cluster autoscaler's status ConfigMap in kube-system
(optional: that one object, to tell whether a node may still be added); Kueue Workloads
(optional, or required with ``--kueue``).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from k8s_step_operator._job.keys import (
    CLUSTER_AUTOSCALER_STATUS_CONFIGMAP,
    CLUSTER_AUTOSCALER_STATUS_NAMESPACE,
)

__all__ = [
    "AUTOSCALER_PERMISSIONS",
    "KUEUE_PERMISSIONS",
    "NODE_PERMISSIONS",
    "OPERATOR_PERMISSIONS",
    "Permission",
]


@dataclass(frozen=True)
class Permission:
    """One verb on one resource that the step operator uses.

    Attributes:
        verb: The RBAC verb (``create``, ``get``...).
        resource: The plural resource name (``jobs``).
        group: The API group; ``""`` is the core group.
        subresource: The subresource (``log`` for ``pods/log``), or ``""``.
        cluster_scoped: Checked without a namespace (nodes).
        namespace: A namespace of its own (kube-system) instead of the steps' namespace.
        name: The one object it is granted on (RBAC ``resourceNames``), or ``""`` for all.
        required: ``False`` when the operator works without it, with less help.
        purpose: What it is used for, shown next to a missing optional permission.
    """

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    cluster_scoped: bool = False
    namespace: str = ""
    name: str = ""
    required: bool = True
    purpose: str = ""

    @property
    def resource_name(self) -> str:
        """``pods/log``, ``jobs.batch``: the spelling of ``kubectl auth can-i`` and RBAC docs."""
        name = self.resource + (f".{self.group}" if self.group else "")
        return name + (f"/{self.subresource}" if self.subresource else "")

    def describe(self, namespace: str) -> str:
        """E.g. ``get pods/log in namespace ml`` or ``list nodes cluster-wide``."""
        where = (
            "cluster-wide" if self.cluster_scoped else f"in namespace {self.namespace or namespace}"
        )
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.resource_name}{named} {where}"


def _perms(
    verbs: Iterable[str], resource: str, group: str = "", subresource: str = "", **kw: Any
) -> tuple[Permission, ...]:
    return tuple(Permission(v, resource, group, subresource, **kw) for v in verbs)


# What the chart's Role grants, and nothing more: keep both in step (a unit test compares them).
OPERATOR_PERMISSIONS: tuple[Permission, ...] = (
    *_perms(("create", "get", "list", "watch", "delete"), "jobs", "batch"),
    *_perms(("get", "list", "watch"), "pods"),
    Permission("get", "pods", subresource="log"),
    *_perms(("get", "list", "watch"), "events"),
    Permission(
        "create",
        "secrets",
        required=False,
        purpose="steps with secret environment values (ZenML's store API token) cannot start",
    ),
    Permission(
        "create",
        "services",
        required=False,
        purpose="steps on several nodes (num_nodes > 1) cannot start: their ranks need the "
        "headless Service that names rank 0",
    ),
)
NODE_PERMISSIONS: tuple[Permission, ...] = (
    *_perms(
        ("get", "list", "watch"),
        "nodes",
        cluster_scoped=True,
        required=False,
        purpose="pre-submit fit check and GPU inventory are skipped",
    ),
    # Karpenter's NodePools: whether a node may still be added for a step no node fits now.
    *_perms(
        ("get", "list", "watch"),
        "nodepools",
        "karpenter.sh",
        cluster_scoped=True,
        required=False,
        purpose="a step no current node fits is failed at once, even where Karpenter could "
        "add a node",
    ),
)
# What the chart's Role in kube-system grants: the cluster autoscaler's status, that one object.
AUTOSCALER_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "get",
        "configmaps",
        namespace=CLUSTER_AUTOSCALER_STATUS_NAMESPACE,
        name=CLUSTER_AUTOSCALER_STATUS_CONFIGMAP,
        required=False,
        purpose="where no Karpenter NodePool is readable either, a step no current node fits "
        "waits 20 s for an autoscaler to speak before it is failed",
    ),
)
KUEUE_PERMISSIONS: tuple[Permission, ...] = (
    *_perms(
        ("get", "list", "watch"),
        "workloads",
        "kueue.x-k8s.io",
        purpose="Kueue queue state is unknown",
    ),
    *_perms(
        ("get", "list"),
        "localqueues",
        "kueue.x-k8s.io",
        purpose="a queued step's ClusterQueue is not named, a missing LocalQueue is found later",
    ),
    Permission(
        "get",
        "localqueues",
        "visibility.kueue.x-k8s.io",
        subresource="pendingworkloads",
        required=False,
        purpose="a queued step's position is not known",
    ),
    Permission(
        "get",
        "clusterqueues",
        "kueue.x-k8s.io",
        cluster_scoped=True,
        required=False,
        purpose="doctor cannot show the queue's GPU quota and usage",
    ),
)
