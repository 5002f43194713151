"""``doctor``: can this identity run steps in this namespace, and on which GPUs?

Most failed first runs are not bugs in the step but a missing RBAC verb, a namespace whose Pod
Security level rejects the pod, a GPU quota already used up, or GPU nodes that do not advertise
the resource the step asks for. Doctor answers those questions up front, as the identity the
pipeline will use:

- every verb the step operator needs, asked with SelfSubjectAccessReview, and each missing one
  named the way an admin grants it (``get pods/log in namespace ml``);
- the GPU inventory: nodes with a vendor GPU resource, the model from the labels GPU feature
  discovery, GKE or Karpenter set, allocatable and capacity, taints;
- the namespace's Pod Security labels and its GPU ResourceQuota.

The shape follows the rest of the package: ``build_report`` is pure (API JSON in, a frozen
``DoctorReport`` out) and is unit-tested; ``run_doctor`` only fetches that JSON. Reading nodes,
the namespace and its quotas are extras: the pipeline's least-privilege role may not allow them,
and then the report says so instead of failing.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from k8s_step_operator._errors import (
    ConfigurationError,
    ForbiddenError,
    NotFoundError,
    StepOperatorError,
)
from k8s_step_operator._job.gpu import GPU_VENDORS, get_gpu_label_scheme, gpu_label_schemes
from k8s_step_operator._kube.client import call, load_api_client, read_json

__all__ = [
    "KUEUE_PERMISSIONS",
    "NODE_PERMISSIONS",
    "OPERATOR_PERMISSIONS",
    "AccessCheck",
    "DoctorReport",
    "GpuNode",
    "Permission",
    "PodSecurity",
    "QuotaEntry",
    "add_parser",
    "build_report",
    "format_report",
    "gpu_model_labels",
    "is_gpu_resource",
    "main",
    "run_doctor",
]

log = logging.getLogger(__name__)

# Retries stop much sooner than the library's default: doctor is interactive.
_RETRY_BUDGET = 5.0
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Permission:
    """One verb on one resource that the step operator uses.

    Attributes:
        verb: The RBAC verb (``create``, ``get``...).
        resource: The plural resource name (``jobs``).
        group: The API group; ``""`` is the core group.
        subresource: The subresource (``log`` for ``pods/log``), or ``""``.
        cluster_scoped: Checked without a namespace (nodes).
        required: ``False`` when the operator works without it, with less help.
        purpose: What it is used for, shown next to a missing optional permission.
    """

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    cluster_scoped: bool = False
    required: bool = True
    purpose: str = ""

    @property
    def resource_name(self) -> str:
        """``pods/log``, ``jobs.batch``: the spelling of ``kubectl auth can-i`` and RBAC docs."""
        name = self.resource + (f".{self.group}" if self.group else "")
        return name + (f"/{self.subresource}" if self.subresource else "")

    def describe(self, namespace: str) -> str:
        """E.g. ``get pods/log in namespace ml`` or ``list nodes cluster-wide``."""
        where = "cluster-wide" if self.cluster_scoped else f"in namespace {namespace}"
        return f"{self.verb} {self.resource_name} {where}"


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
)
NODE_PERMISSIONS: tuple[Permission, ...] = _perms(
    ("get", "list", "watch"),
    "nodes",
    cluster_scoped=True,
    required=False,
    purpose="pre-submit fit check and GPU inventory are skipped",
)
KUEUE_PERMISSIONS: tuple[Permission, ...] = _perms(
    ("get", "list", "watch"), "workloads", "kueue.x-k8s.io", purpose="Kueue queue state is unknown"
)

# Accelerator resources beyond the vendors of ``gpu.GPU_VENDORS``: exact names, and prefixes.
_EXTRA_GPU_RESOURCES = ("nvidia.com/gpu.shared", "habana.ai/gaudi")
_GPU_RESOURCE_PREFIXES = ("nvidia.com/mig-", "gpu.intel.com/", "aws.amazon.com/neuron")

# Where the GPU model is written, first match wins: the label schemes of ``gpu`` (GPU feature
# discovery, GKE, Karpenter and any registered later), then the AMD node labeller's.
_EXTRA_MODEL_LABELS = ("amd.com/gpu.product-name", "beta.amd.com/gpu.product-name")


def gpu_model_labels() -> tuple[str, ...]:
    """The node labels that may name the GPU model, in the order they are tried."""
    schemes = [get_gpu_label_scheme("gpu_label_scheme", name) for name in gpu_label_schemes()]
    order = {"gpu-feature-discovery": 0, "gke": 1, "karpenter": 2}
    schemes.sort(key=lambda sc: (order.get(sc.name, len(order)), sc.name))
    return tuple(dict.fromkeys([sc.label_key for sc in schemes] + list(_EXTRA_MODEL_LABELS)))


_PSS_LABEL = "pod-security.kubernetes.io/"


def is_gpu_resource(key: str) -> bool:
    """Whether a resource name (as in node capacity) is a vendor GPU/accelerator resource."""
    return (
        any(v.resource == key for v in GPU_VENDORS.values())
        or key in _EXTRA_GPU_RESOURCES
        or key.startswith(_GPU_RESOURCE_PREFIXES)
    )


@dataclass(frozen=True)
class AccessCheck:
    """The API server's answer for one permission."""

    permission: Permission
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class GpuNode:
    """A node that advertises at least one GPU resource.

    Attributes:
        name: Node name.
        model: GPU model from the first label of ``gpu_model_labels()`` present, or ``""``.
        model_label: The label the model came from.
        capacity: GPU resources in ``status.capacity``.
        allocatable: GPU resources in ``status.allocatable``.
        taints: ``key=value:Effect`` of each taint.
        ready: The Ready condition (``None`` when the node reports none).
        unschedulable: Cordoned.
    """

    name: str
    model: str
    model_label: str
    capacity: Mapping[str, str]
    allocatable: Mapping[str, str]
    taints: tuple[str, ...]
    ready: bool | None
    unschedulable: bool


@dataclass(frozen=True)
class PodSecurity:
    """The namespace's Pod Security admission labels; ``""`` where a label is not set."""

    enforce: str
    enforce_version: str
    audit: str
    warn: str


@dataclass(frozen=True)
class QuotaEntry:
    """One GPU resource of a ResourceQuota in the namespace."""

    quota: str
    resource: str
    hard: str
    used: str


@dataclass(frozen=True)
class DoctorReport:
    """Everything doctor found. ``ok`` is true when every required permission is granted.

    Attributes:
        namespace: The namespace checked.
        checks: One answer per permission asked.
        node_count: Nodes seen, or ``None`` when nodes could not be listed.
        gpu_nodes: The nodes with a GPU resource.
        pod_security: The namespace's labels, or ``None`` when it could not be read.
        gpu_quotas: GPU entries of the namespace's ResourceQuotas (``None``: not readable).
        problems: Findings that make the namespace unusable (e.g. it does not exist).
        notes: What could not be checked, and why.
    """

    namespace: str
    checks: tuple[AccessCheck, ...]
    node_count: int | None
    gpu_nodes: tuple[GpuNode, ...]
    pod_security: PodSecurity | None
    gpu_quotas: tuple[QuotaEntry, ...] | None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def missing(self) -> tuple[Permission, ...]:
        """Required permissions the identity lacks."""
        return tuple(c.permission for c in self.checks if c.permission.required and not c.allowed)

    @property
    def missing_optional(self) -> tuple[Permission, ...]:
        """Optional permissions the identity lacks."""
        return tuple(
            c.permission for c in self.checks if not c.permission.required and not c.allowed
        )

    @property
    def ok(self) -> bool:
        """Every required permission is there and nothing makes the namespace unusable."""
        return not self.missing and not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, with ``ok`` and the missing permissions spelled out."""
        data = asdict(self)
        data["ok"] = self.ok
        data["missing"] = [p.describe(self.namespace) for p in self.missing]
        data["missing_optional"] = [p.describe(self.namespace) for p in self.missing_optional]
        return data


# ---------------------------------------------------------------------------------------------
# Pure part: API JSON in, report out.


def _gpu_node(node: Mapping[str, Any]) -> GpuNode | None:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    capacity = {k: str(v) for k, v in (status.get("capacity") or {}).items() if is_gpu_resource(k)}
    allocatable = {
        k: str(v) for k, v in (status.get("allocatable") or {}).items() if is_gpu_resource(k)
    }
    if not capacity and not allocatable:
        return None
    labels = meta.get("labels") or {}
    model_label = next((label for label in gpu_model_labels() if labels.get(label)), "")
    taints = tuple(
        f"{t.get('key', '')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}"
        for t in spec.get("taints") or ()
    )
    ready: bool | None = None
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
    return GpuNode(
        name=str(meta.get("name", "")),
        model=str(labels.get(model_label, "")) if model_label else "",
        model_label=model_label,
        capacity=capacity,
        allocatable=allocatable,
        taints=taints,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
    )


def _pod_security(namespace_obj: Mapping[str, Any]) -> PodSecurity:
    labels = (namespace_obj.get("metadata") or {}).get("labels") or {}
    return PodSecurity(
        enforce=str(labels.get(_PSS_LABEL + "enforce", "")),
        enforce_version=str(labels.get(_PSS_LABEL + "enforce-version", "")),
        audit=str(labels.get(_PSS_LABEL + "audit", "")),
        warn=str(labels.get(_PSS_LABEL + "warn", "")),
    )


def _quota_resource_is_gpu(key: str) -> bool:
    for prefix in ("requests.", "limits."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return is_gpu_resource(key)


def _gpu_quotas(quotas: Sequence[Mapping[str, Any]]) -> tuple[QuotaEntry, ...]:
    entries = []
    for quota in quotas:
        name = str((quota.get("metadata") or {}).get("name", ""))
        # status.hard is what the quota controller enforces; spec.hard until it has caught up.
        hard = (
            (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard") or {}
        )
        used = (quota.get("status") or {}).get("used") or {}
        for key in sorted(hard):
            if _quota_resource_is_gpu(key):
                entries.append(QuotaEntry(name, key, str(hard[key]), str(used.get(key, "0"))))
    return tuple(entries)


def build_report(
    namespace: str,
    checks: Sequence[AccessCheck],
    *,
    nodes: Sequence[Mapping[str, Any]] | None,
    namespace_obj: Mapping[str, Any] | None,
    quotas: Sequence[Mapping[str, Any]] | None,
    problems: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> DoctorReport:
    """Turn what the API server said into a report. Pure: no I/O.

    Args:
        namespace: The namespace checked.
        checks: The access review answers.
        nodes: Node objects as API JSON, or ``None`` when they could not be listed.
        namespace_obj: The Namespace as API JSON, or ``None`` when it could not be read.
        quotas: The namespace's ResourceQuotas as API JSON, or ``None`` when not readable.
        problems: Findings that make the namespace unusable.
        notes: What could not be checked.

    Returns:
        The report; ``report.ok`` says whether the pipeline can run steps there.
    """
    gpu_nodes = tuple(
        sorted(
            (n for n in (_gpu_node(node) for node in nodes or ()) if n is not None),
            key=lambda n: n.name,
        )
    )
    all_notes = list(notes)
    if nodes is not None and not gpu_nodes:
        all_notes.append(
            "no node advertises a GPU resource (nvidia.com/gpu, amd.com/gpu, ...): GPU steps "
            "cannot be scheduled until a device plugin advertises one"
        )
    pod_security = _pod_security(namespace_obj) if namespace_obj is not None else None
    if pod_security is not None and not pod_security.enforce:
        all_notes.append(
            f"namespace {namespace} has no Pod Security enforce label: the cluster's default "
            "applies (privileged unless configured); label it restricted"
        )
    elif pod_security is not None and pod_security.enforce != "restricted":
        all_notes.append(
            f"namespace {namespace} enforces Pod Security {pod_security.enforce!r}; step pods "
            "pass 'restricted', which is the recommended level"
        )
    return DoctorReport(
        namespace=namespace,
        checks=tuple(checks),
        node_count=len(nodes) if nodes is not None else None,
        gpu_nodes=gpu_nodes,
        pod_security=pod_security,
        gpu_quotas=_gpu_quotas(quotas) if quotas is not None else None,
        problems=tuple(problems),
        notes=tuple(all_notes),
    )


def _resources(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def format_report(report: DoctorReport) -> str:
    """The report as text for a terminal, ending with the verdict."""
    ns = report.namespace
    lines = [f"Namespace {ns}", "", "Permissions (SelfSubjectAccessReview):"]
    for check in report.checks:
        perm = check.permission
        if check.allowed:
            mark = "ok      "
        elif perm.required:
            mark = "MISSING "
        else:
            mark = "warning "
        extra = f"  ({perm.purpose})" if not check.allowed and perm.purpose else ""
        lines.append(f"  {mark}{perm.describe(ns)}{extra}")

    lines.append("")
    if report.node_count is None:
        lines.append("GPU inventory: not available (nodes cannot be listed)")
    else:
        lines.append(f"GPU inventory: {len(report.gpu_nodes)} of {report.node_count} nodes")
        for node in report.gpu_nodes:
            model = f"{node.model} (from {node.model_label})" if node.model else "model unknown"
            state = {True: "Ready", False: "NotReady", None: "Ready unknown"}[node.ready]
            if node.unschedulable:
                state += ", cordoned"
            lines.append(f"  {node.name}: {model}; {state}")
            lines.append(
                f"    allocatable {_resources(node.allocatable)}; "
                f"capacity {_resources(node.capacity)}"
            )
            lines.append(f"    taints: {', '.join(node.taints) or 'none'}")

    lines.append("")
    ps = report.pod_security
    if ps is None:
        lines.append("Pod Security: unknown (the namespace cannot be read)")
    else:
        version = f" ({ps.enforce_version})" if ps.enforce_version else ""
        lines.append(
            f"Pod Security: enforce={ps.enforce or 'not set'}{version} "
            f"audit={ps.audit or 'not set'} warn={ps.warn or 'not set'}"
        )
    if report.gpu_quotas is None:
        lines.append("GPU quota: unknown (ResourceQuotas cannot be listed)")
    elif not report.gpu_quotas:
        lines.append("GPU quota: none")
    else:
        lines.append("GPU quota:")
        for q in report.gpu_quotas:
            lines.append(f"  {q.quota}: {q.resource} used {q.used} of {q.hard}")

    if report.problems or report.notes:
        lines.append("")
        lines.extend(f"problem: {p}" for p in report.problems)
        lines.extend(f"note: {n}" for n in report.notes)

    lines.append("")
    if report.ok:
        optional = len(report.missing_optional)
        tail = f" ({optional} optional permission(s) missing)" if optional else ""
        lines.append(f"OK: every required permission is granted in namespace {ns}{tail}")
    else:
        parts = [p.describe(ns) for p in report.missing] + list(report.problems)
        lines.append("NOT OK: " + "; ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# API part: fetch the JSON the pure part needs.


def _check(authz: Any, perm: Permission, namespace: str) -> AccessCheck:
    attributes = k8s.V1ResourceAttributes(
        namespace=None if perm.cluster_scoped else namespace,
        verb=perm.verb,
        group=perm.group,
        resource=perm.resource,
        subresource=perm.subresource or None,
    )
    body = k8s.V1SelfSubjectAccessReview(
        spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
    )
    review = call(
        f"review {perm.describe(namespace)}",
        authz.create_self_subject_access_review,
        body,
        budget=_RETRY_BUDGET,
    )
    status = review.status
    reason = status.reason or status.evaluation_error or ""
    return AccessCheck(perm, bool(status.allowed) and not status.denied, reason)


def _get_json(operation: str, fn: Any, *args: Any) -> Any:
    response = call(operation, fn, *args, _preload_content=False, budget=_RETRY_BUDGET)
    return read_json(response)


def _kueue_served(api_client: Any) -> bool:
    groups = call("list API groups", k8s.ApisApi(api_client).get_api_versions, budget=_RETRY_BUDGET)
    return any(g.name == "kueue.x-k8s.io" for g in groups.groups or ())


def run_doctor(api_client: Any, namespace: str, *, kueue: bool | None = None) -> DoctorReport:
    """Check permissions, GPU inventory, Pod Security and GPU quota as ``api_client``'s identity.

    Args:
        api_client: A ``kubernetes.client.ApiClient`` authenticated as the pipeline's identity.
        namespace: The namespace the steps run in.
        kueue: ``True`` requires the Kueue Workload permissions; ``None`` checks them as
            optional when the cluster serves Kueue; ``False`` skips them.

    Returns:
        The report.

    Raises:
        ConfigurationError: ``namespace`` is not a valid namespace name.
        ApiError: The API server could not be asked (unreachable, or refused the reviews).
    """
    if not _DNS1123_LABEL.match(namespace or ""):
        raise ConfigurationError(
            "namespace", "a DNS-1123 label (lowercase alphanumerics and '-', at most 63)", namespace
        )
    permissions: list[Permission] = [*OPERATOR_PERMISSIONS, *NODE_PERMISSIONS]
    if kueue is None and _kueue_served(api_client):
        permissions += [
            Permission(p.verb, p.resource, p.group, required=False, purpose=p.purpose)
            for p in KUEUE_PERMISSIONS
        ]
    elif kueue:
        permissions += KUEUE_PERMISSIONS

    authz = k8s.AuthorizationV1Api(api_client)
    checks = [_check(authz, perm, namespace) for perm in permissions]

    core = k8s.CoreV1Api(api_client)
    notes: list[str] = []
    problems: list[str] = []
    nodes: list[dict[str, Any]] | None = None
    namespace_obj: dict[str, Any] | None = None
    quotas: list[dict[str, Any]] | None = None
    try:
        nodes = _get_json("list nodes", core.list_node).get("items") or []
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
        quotas = (
            _get_json(
                f"list resourcequotas in {namespace}",
                core.list_namespaced_resource_quota,
                namespace,
            ).get("items")
            or []
        )
    except ForbiddenError:
        notes.append(
            f"GPU quota unknown: this identity may not list resourcequotas in {namespace} "
            "(run doctor as an admin to see it)"
        )
    report = build_report(
        namespace,
        checks,
        nodes=nodes,
        namespace_obj=namespace_obj,
        quotas=quotas,
        problems=problems,
        notes=notes,
    )
    for perm in report.missing:
        log.warning("missing permission: %s", perm.describe(namespace))
    return report


# ---------------------------------------------------------------------------------------------
# Command line: `k8s-step-operator doctor`.


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``doctor`` subcommand to an ``argparse`` subparsers object.

    The parser's default ``func`` is ``main``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check permissions, GPU inventory, Pod Security and GPU quota",
        description=(
            "Check, as the identity the pipeline uses, every permission the step operator "
            "needs in a namespace, and show the GPU nodes, the namespace's Pod Security level "
            "and its GPU quota. Exit status 0 when every required permission is granted."
        ),
    )
    parser.add_argument(
        "-n", "--namespace", help="namespace of the steps (default: the context's, or default)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "--in-cluster", action="store_true", help="use the pod's ServiceAccount, not a kubeconfig"
    )
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="impersonate USER, e.g. system:serviceaccount:NS:NAME (needs impersonate rights)",
    )
    parser.add_argument(
        "--kueue",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require the Kueue permissions (default: check them as optional when Kueue is served)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=main)
    return parser


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    try:
        contexts, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
    except (k8s_config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def main(args: argparse.Namespace) -> int:
    """Run doctor from parsed arguments; print the report; 0 when ok, 1 otherwise."""
    in_cluster = bool(getattr(args, "in_cluster", False))
    namespace = args.namespace
    try:
        if not namespace:
            namespace = (
                "default" if in_cluster else _default_namespace(args.kubeconfig, args.context)
            )
        api_client = load_api_client(args.kubeconfig, args.context, in_cluster=in_cluster)
        if getattr(args, "as_user", None):
            api_client.set_default_header("Impersonate-User", args.as_user)
        with api_client:
            report = run_doctor(api_client, namespace, kueue=getattr(args, "kueue", None))
    except StepOperatorError as e:
        print(f"doctor: {e}", file=sys.stderr)
        return 1
    except (k8s_config.ConfigException, OSError) as e:
        print(f"doctor: cannot load the kubeconfig: {e}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0 if report.ok else 1
