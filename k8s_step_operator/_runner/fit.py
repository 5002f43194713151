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
from dataclasses import dataclass, field

from k8s_step_operator._format import amount
from k8s_step_operator._job.gpu import GPU_VENDORS
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
    "GangRoom",
    "NodeMiss",
    "check_fit",
    "fits_somewhere",
    "gang_room",
    "pod_requests",
    "required_node_terms",
    "tolerates",
    "toleration_for",
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
    taint: Taint | None = None


@dataclass(frozen=True)
class FitVerdict:
    """Whether some node could run the pod, and why each other node cannot."""

    fits: bool
    misses: tuple[NodeMiss, ...] = ()
    selector: Mapping[str, str] | None = None
    requests: Mapping[str, float] = field(default_factory=dict)

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
        if furthest == CAPACITY:
            return _capacity_advice(closest)
        if furthest == TAINT:
            return _taint_advice(closest, self.requests)
        names = _names([m.node for m in closest])
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


def _capacity_advice(closest: Sequence[NodeMiss]) -> str:
    """The resource most nodes lack, and the nodes that have the most of it."""
    by_key: dict[str, list[NodeMiss]] = {}
    for m in closest:
        by_key.setdefault(m.key, []).append(m)
    key, misses = max(by_key.items(), key=lambda kv: len(kv[1]))
    requested = amount(key, misses[0].requested, up=True)
    most = max(m.allocatable for m in misses)
    if most <= 0:
        return (
            f"{requested} {key} requested, but no node that could take the step has any "
            f"{key}: check the GPU vendor, mig_profile and the resources, or add nodes with it"
        )
    # Only the nodes that have the resource, the largest first: a node without it is no
    # "largest node" of it.
    largest = sorted(m.node for m in misses if m.allocatable == most)
    others = sum(1 for m in misses if 0 < m.allocatable < most)
    also = f"; {others} more with less" if others else ""
    most_text = amount(key, most)
    return (
        f"{requested} {key} requested, but the largest node that could take the step has "
        f"{most_text} allocatable ({_names(largest)}{also}): request at most {most_text}, or "
        "add nodes with more"
    )


_VENDOR_TAINTS = {vendor.taint_key: vendor for vendor in GPU_VENDORS.values()}


def toleration_for(taint: Taint) -> str:
    """The toleration (as a settings entry) that matches ``taint``."""
    key, value, effect = taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")
    if value:
        return f"{{key: {key}, operator: Equal, value: {value}, effect: {effect}}}"
    return f"{{key: {key}, operator: Exists, effect: {effect}}}"


def _taint_advice(closest: Sequence[NodeMiss], requests: Mapping[str, float]) -> str:
    """Per untolerated taint, the toleration that matches it, or why gpu_tolerations did not."""
    by_taint: dict[str, tuple[Taint, list[str]]] = {}
    for m in closest:
        if m.taint is not None:
            by_taint.setdefault(m.key, (m.taint, []))[1].append(m.node)
    parts: list[str] = []
    for shown, (taint, nodes) in sorted(by_taint.items()):
        vendor = _VENDOR_TAINTS.get(taint.get("key", ""))
        fix = f"add the toleration {toleration_for(taint)} to settings.tolerations"
        if vendor is not None:
            asked = any(
                r == vendor.resource or r.startswith(f"{vendor.resource.split('/')[0]}/mig-")
                for r, n in requests.items()
                if n > 0
            )
            why = (
                f"gpu_tolerations is off, and the step requests {vendor.name} GPUs: turn it on, or "
                if asked
                else f"gpu_tolerations adds it only for a step that requests {vendor.name} GPUs, "
                "and this one requests none: request them (gpu_count), or "
            )
            fix = why + fix
        parts.append(
            f"the nodes that match the step's selectors ({_names(nodes)}) carry the taint {shown}, "
            f"which the step does not tolerate: {fix}"
        )
    return "; ".join(parts)


def _names(names: Sequence[str], limit: int = 3) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


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


def pod_requests(pod_spec: PodSpec) -> dict[str, float]:
    """What one pod requests, per resource (a limit alone counts as the request)."""
    return _requests(pod_spec)


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
    misses: list[NodeMiss] = []
    for node in nodes:
        miss = _miss(pod_spec, node)
        if miss is None:
            return FitVerdict(True)
        misses.append(miss)
    return FitVerdict(False, tuple(misses), pod_spec.get("nodeSelector", {}), _requests(pod_spec))


def _miss(pod_spec: PodSpec, node: Node) -> NodeMiss | None:
    """Why ``node`` can never run the pod (the first filter it fails), or ``None``."""
    selector = pod_spec.get("nodeSelector", {})
    tolerations = pod_spec.get("tolerations") or []
    terms = required_node_terms(pod_spec)
    requests = _requests(pod_spec)
    name = name_of(node)
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in selector.items()):
        return NodeMiss(name, SELECTOR, "node selector does not match")
    if terms and not any(
        all(_matches_expression(labels, e) for e in (term.get("matchExpressions") or []))
        for term in terms
    ):
        return NodeMiss(name, AFFINITY, "required node affinity does not match")
    untolerated = [
        t
        for t in node.get("spec", {}).get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)
    ]
    if untolerated:
        t = untolerated[0]
        shown = f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
        return NodeMiss(name, TAINT, f"untolerated taint {shown}", key=shown, taint=t)
    allocatable = node.get("status", {}).get("allocatable", {})
    short = [
        key
        for key, amount in requests.items()
        if amount > 0 and _quantity(allocatable.get(key, 0)) < amount
    ]
    if short:
        key = short[0]
        have = _quantity(allocatable.get(key, 0))
        return NodeMiss(
            name,
            CAPACITY,
            f"{key} requested {amount(key, requests[key], up=True)}, allocatable "
            f"{amount(key, have)}",
            key=key,
            requested=requests[key],
            allocatable=have,
        )
    return None


@dataclass(frozen=True)
class GangRoom:
    """How many ranks of a step on several nodes the nodes could ever hold at once.

    Attributes:
        ranks: Ranks the nodes that fit one could hold together, ignoring what runs there now
            (with a topology level: in its largest domain).
        nodes: The nodes that could take a rank.
        level: The topology level (node label) the ranks must share, or ``""``.
        domain: With a level, the value of its largest domain.
        per_domain: With a level, the ranks each domain could hold.
        unlabelled: With a level, nodes that could take a rank but do not carry it.
    """

    ranks: int
    nodes: tuple[str, ...] = ()
    level: str = ""
    domain: str = ""
    per_domain: Mapping[str, int] | None = None
    unlabelled: tuple[str, ...] = ()


def gang_room(pod_spec: PodSpec, nodes: Sequence[Node], level: str = "") -> GangRoom:
    """How many pods of ``pod_spec`` the nodes could hold at once, all in one domain of ``level``.

    Each node that fits one pod (``check_fit``'s filters) holds as many as its allocatable
    capacity allows for every resource the pod requests (and its ``pods`` count), whatever runs
    there now: the room of an empty cluster, the most that waiting could ever give.

    Args:
        pod_spec: One rank's ``PodSpec``.
        nodes: The cluster's ``Node`` objects.
        level: A node label all ranks must share (``""``: none).
    """
    requests = {k: v for k, v in _requests(pod_spec).items() if v > 0}
    room: dict[str, int] = {}
    fitting: list[str] = []
    unlabelled: list[str] = []
    for node in nodes:
        if _miss(pod_spec, node) is not None:
            continue
        name = name_of(node)
        allocatable = node.get("status", {}).get("allocatable", {})
        holds = min(
            [int(_quantity(allocatable.get(k, 0)) // amount) for k, amount in requests.items()]
            + ([int(_quantity(allocatable["pods"]))] if "pods" in allocatable else []),
            default=1_000_000,
        )
        fitting.append(name)
        key = labels_of(node).get(level) if level else ""
        if key is None:
            unlabelled.append(name)
            continue
        room[key] = room.get(key, 0) + holds
    if not level:
        return GangRoom(room.get("", 0), tuple(fitting))
    best = max(room.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
    return GangRoom(
        best[1],
        tuple(fitting),
        level=level,
        domain=best[0],
        per_domain=dict(room),
        unlabelled=tuple(unlabelled),
    )


def fits_somewhere(pod_spec: PodSpec, nodes: Sequence[Node]) -> tuple[bool, list[str]]:
    """``check_fit`` as ``(fits, reasons)``: per node that cannot fit, why not."""
    verdict = check_fit(pod_spec, nodes)
    return verdict.fits, verdict.reasons
