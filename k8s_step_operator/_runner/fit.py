"""Could any node ever run this pod? A pure check, and advice that names what to change.

The scheduler says *that* a pod does not fit ("6 node(s) had untolerated taint(s)"), not which
setting of the step is at fault. This check looks at the nodes the way the scheduler's filters do
(node selector, required node affinity, NoSchedule/NoExecute taints, allocatable capacity),
ignoring what runs on them now, and keeps for each node the first filter that rules it out. The
filter that rules out the nodes that came *furthest* is the one to fix: if the nodes with the
right labels all carry a taint the step does not tolerate, the advice is the toleration, not the
labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8s_step_operator._job.quantity import parse_quantity
from k8s_step_operator._objects import (
    Node,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodSpec,
    Quantity,
    Taint,
    Toleration,
    labels_of,
    name_of,
)

__all__ = [
    "FitVerdict",
    "NodeMiss",
    "check_fit",
    "fits_somewhere",
    "required_node_terms",
    "tolerates",
]

# The filters, in the scheduler's order; a node that fails one is not judged by the next.
SELECTOR, AFFINITY, TAINT, CAPACITY = range(4)


def _quantity(value: Quantity) -> float:
    """A quantity read from a node; a value we cannot read never rules a node out."""
    try:
        return float(parse_quantity(value))
    except ValueError:
        return float("inf")


@dataclass(frozen=True)
class NodeMiss:
    """Why one node can never run the pod: the first filter it fails."""

    node: str
    stage: int
    detail: str
    key: str = ""
    requested: float = 0.0
    allocatable: float = 0.0


@dataclass(frozen=True)
class FitVerdict:
    """Whether some node could run the pod, and why each other node cannot."""

    fits: bool
    misses: tuple[NodeMiss, ...] = ()
    selector: Mapping[str, str] | None = None

    @property
    def reasons(self) -> list[str]:
        """One line per node that cannot fit."""
        return [f"{m.node}: {m.detail}" for m in self.misses]

    def advice(self) -> str:
        """What to change in the step, judged from the nodes that came closest to fitting."""
        if self.fits or not self.misses:
            return ""
        furthest = max(m.stage for m in self.misses)
        closest = [m for m in self.misses if m.stage == furthest]
        names = _names(closest)
        if furthest == CAPACITY:
            by_key: dict[str, list[NodeMiss]] = {}
            for m in closest:
                by_key.setdefault(m.key, []).append(m)
            key, misses = max(by_key.items(), key=lambda kv: len(kv[1]))
            most = max(m.allocatable for m in misses)
            return (
                f"{_num(misses[0].requested)} {key} requested, but the largest node that could "
                f"take the step has {_num(most)} allocatable ({names}): request at most "
                f"{_num(most)}, or add nodes with more"
            )
        if furthest == TAINT:
            taints = sorted({m.key for m in closest})
            return (
                f"the nodes that match the step's selectors ({names}) carry the taint "
                f"{', '.join(taints)}, which the step does not tolerate: add a toleration for it "
                "(settings.tolerations), or leave gpu_tolerations on when GPUs are requested"
            )
        if furthest == AFFINITY:
            return (
                f"no node matches the step's required node affinity ({names} match its node "
                "selector only): check gpu_type, gpu_label_scheme and affinity"
            )
        wanted = ", ".join(f"{k}={v}" for k, v in (self.selector or {}).items())
        return (
            f"no node carries the labels the step selects ({wanted}): check gpu_type, "
            "gpu_label_scheme, gpu_label_key and node_selector"
        )


def _names(misses: Sequence[NodeMiss], limit: int = 3) -> str:
    names = sorted(m.node for m in misses)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _num(value: float) -> str:
    return f"{value:g}"


def tolerates(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint`` (the scheduler's matching rule)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _matches_expression(labels: Mapping[str, str], expr: NodeSelectorRequirement) -> bool:
    key, op = str(expr.get("key")), str(expr.get("operator"))
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return True  # Gt / Lt: not judged here; never rule a node out on what we do not model


def required_node_terms(pod_spec: PodSpec) -> list[NodeSelectorTerm]:
    """The terms of the pod's required node affinity (``[]``: none; one term must match)."""
    affinity = pod_spec.get("affinity", {}).get("nodeAffinity", {})
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return required.get("nodeSelectorTerms") or []


def _requests(pod_spec: PodSpec) -> dict[str, float]:
    requests: dict[str, float] = {}
    for c in pod_spec.get("containers") or []:
        res = c.get("resources", {})
        merged = {**res.get("limits", {}), **res.get("requests", {})}
        for key, value in merged.items():
            requests[key] = requests.get(key, 0.0) + float(parse_quantity(value))
    return requests


def check_fit(pod_spec: PodSpec, nodes: Sequence[Node]) -> FitVerdict:
    """Whether any node could ever run the pod, ignoring what currently runs there.

    A fitting answer means "maybe"; a non-fitting one means no node, even empty, can take it.

    Args:
        pod_spec: The pod's ``PodSpec`` (a Job's ``spec.template.spec``).
        nodes: The cluster's ``Node`` objects.
    """
    selector = pod_spec.get("nodeSelector", {})
    tolerations = pod_spec.get("tolerations") or []
    terms = required_node_terms(pod_spec)
    requests = _requests(pod_spec)
    misses: list[NodeMiss] = []
    for node in nodes:
        name = name_of(node)
        labels = labels_of(node)
        if any(labels.get(k) != v for k, v in selector.items()):
            misses.append(NodeMiss(name, SELECTOR, "node selector does not match"))
            continue
        if terms and not any(
            all(_matches_expression(labels, e) for e in (term.get("matchExpressions") or []))
            for term in terms
        ):
            misses.append(NodeMiss(name, AFFINITY, "required node affinity does not match"))
            continue
        untolerated = [
            t
            for t in node.get("spec", {}).get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)
        ]
        if untolerated:
            t = untolerated[0]
            shown = f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
            misses.append(NodeMiss(name, TAINT, f"untolerated taint {shown}", key=shown))
            continue
        allocatable = node.get("status", {}).get("allocatable", {})
        short = [
            key
            for key, amount in requests.items()
            if amount > 0 and _quantity(allocatable.get(key, 0)) < amount
        ]
        if short:
            key = short[0]
            have = _quantity(allocatable.get(key, 0))
            misses.append(
                NodeMiss(
                    name,
                    CAPACITY,
                    f"{key} requested {requests[key]:g}, allocatable {have:g}",
                    key=key,
                    requested=requests[key],
                    allocatable=have,
                )
            )
            continue
        return FitVerdict(True)
    return FitVerdict(False, tuple(misses), selector)


def fits_somewhere(pod_spec: PodSpec, nodes: Sequence[Node]) -> tuple[bool, list[str]]:
    """``check_fit`` as ``(fits, reasons)``: per node that cannot fit, why not."""
    verdict = check_fit(pod_spec, nodes)
    return verdict.fits, verdict.reasons
