"""Doctor's findings as data: API JSON in, a frozen ``DoctorReport`` out, and its text form.

Pure: nothing here talks to the API server (``probe`` fetches the JSON). Every check of doctor is
therefore unit-tested with objects shaped like the server's answers: access reviews, nodes, the
namespace, its ResourceQuotas and Kueue's queues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from k8s_step_operator._doctor.gpus import gpu_model_labels, is_gpu_resource
from k8s_step_operator._doctor.kueue import KueueReport, format_kueue
from k8s_step_operator._doctor.permissions import Permission
from k8s_step_operator._job.keys import POD_SECURITY_LABEL_PREFIX
from k8s_step_operator._objects import (
    Namespace,
    Node,
    ResourceQuota,
    conditions_of,
    labels_of,
    name_of,
)

__all__ = [
    "AccessCheck",
    "DoctorReport",
    "GpuNode",
    "PodSecurity",
    "QuotaEntry",
    "build_report",
    "format_report",
]


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
        notes: What could not be checked, and why; findings that are not failures.
        kueue: The namespace's Kueue queues, or ``None`` when Kueue was not looked at.
    """

    namespace: str
    checks: tuple[AccessCheck, ...]
    node_count: int | None
    gpu_nodes: tuple[GpuNode, ...]
    pod_security: PodSecurity | None
    gpu_quotas: tuple[QuotaEntry, ...] | None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    kueue: KueueReport | None = None

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


def _gpu_node(node: Node) -> GpuNode | None:
    spec = node.get("spec", {})
    status = node.get("status", {})
    capacity = {k: str(v) for k, v in status.get("capacity", {}).items() if is_gpu_resource(k)}
    allocatable = {
        k: str(v) for k, v in status.get("allocatable", {}).items() if is_gpu_resource(k)
    }
    if not capacity and not allocatable:
        return None
    labels = labels_of(node)
    model_label = next((label for label in gpu_model_labels() if labels.get(label)), "")
    taints = tuple(
        f"{t.get('key', '')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}"
        for t in spec.get("taints") or ()
    )
    ready: bool | None = None
    for cond in conditions_of(node):
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
    return GpuNode(
        name=name_of(node),
        model=str(labels.get(model_label, "")) if model_label else "",
        model_label=model_label,
        capacity=capacity,
        allocatable=allocatable,
        taints=taints,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
    )


def _pod_security(namespace_obj: Namespace) -> PodSecurity:
    labels = labels_of(namespace_obj)
    return PodSecurity(
        enforce=str(labels.get(POD_SECURITY_LABEL_PREFIX + "enforce", "")),
        enforce_version=str(labels.get(POD_SECURITY_LABEL_PREFIX + "enforce-version", "")),
        audit=str(labels.get(POD_SECURITY_LABEL_PREFIX + "audit", "")),
        warn=str(labels.get(POD_SECURITY_LABEL_PREFIX + "warn", "")),
    )


def _quota_resource_is_gpu(key: str) -> bool:
    for prefix in ("requests.", "limits."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return is_gpu_resource(key)


def _gpu_quotas(quotas: Sequence[ResourceQuota]) -> tuple[QuotaEntry, ...]:
    entries = []
    for quota in quotas:
        name = name_of(quota)
        status = quota.get("status", {})
        # status.hard is what the quota controller enforces; spec.hard until it has caught up.
        hard = status.get("hard") or quota.get("spec", {}).get("hard") or {}
        used = status.get("used", {})
        for key in sorted(hard):
            if _quota_resource_is_gpu(key):
                entries.append(QuotaEntry(name, key, str(hard[key]), str(used.get(key, "0"))))
    return tuple(entries)


def build_report(
    namespace: str,
    checks: Sequence[AccessCheck],
    *,
    nodes: Sequence[Node] | None,
    namespace_obj: Namespace | None,
    quotas: Sequence[ResourceQuota] | None,
    problems: Sequence[str] = (),
    notes: Sequence[str] = (),
    kueue: KueueReport | None = None,
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
        kueue: The Kueue section (``kueue.build_kueue``), or ``None`` when not looked at.

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
    if kueue is not None:
        all_notes.extend(kueue.notes)
    return DoctorReport(
        namespace=namespace,
        checks=tuple(checks),
        node_count=len(nodes) if nodes is not None else None,
        gpu_nodes=gpu_nodes,
        pod_security=pod_security,
        gpu_quotas=_gpu_quotas(quotas) if quotas is not None else None,
        problems=tuple(problems),
        notes=tuple(all_notes),
        kueue=kueue,
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

    if report.kueue is not None:
        lines.append("")
        lines.extend(format_kueue(report.kueue, ns))

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
