"""Will a node be added for this pod? What autoscalers say on the pod, and which ones exist.

A pod that no current node fits is not hopeless on a cluster that scales its GPU pools from zero:
Karpenter (or the cluster autoscaler) may be about to add the node. Failing at once there makes
the operator unusable on exactly the clusters that need it; waiting forever where no autoscaler
will act hides a mistake for the length of a timeout. So the runner tells the two apart:

* what each autoscaler said on the pod, in its own words: Karpenter's ``Nominated`` ("Pod should
  schedule on: nodeclaim/x") or its ``FailedScheduling`` (source ``karpenter``); the cluster
  autoscaler's ``TriggeredScaleUp`` / ``NotTriggerScaleUp``. Each one's latest word is its
  verdict (``latest_signals``): a cluster may run both, and one's "no" does not cancel the
  other's "a node is being added".
* which ones exist (``AutoscalerView``: Karpenter's NodePools are listed; the cluster
  autoscaler's status ConfigMap is read), and for Karpenter whether any NodePool could ever make
  a node this pod accepts (its labels, requirements and taints against the pod's selectors and
  tolerations, ``nodepools_admitting``). "No node will come" needs every one of them that may act
  to have said no.

Everything here but ``AutoscalerView`` is pure.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from k8s_step_operator._errors import ApiError, ForbiddenError, NotFoundError
from k8s_step_operator._job.keys import (
    CLUSTER_AUTOSCALER_STATUS_CONFIGMAP,
    CLUSTER_AUTOSCALER_STATUS_NAMESPACE,
)
from k8s_step_operator._job.quantity import parse_quantity
from k8s_step_operator._objects import (
    ConfigMap,
    Event,
    NodePool,
    NodeSelectorRequirement,
    PodSpec,
    labels_of,
    name_of,
)
from k8s_step_operator._runner.fit import (
    pod_requests,
    required_node_terms,
    tolerates,
    toleration_for,
)
from k8s_step_operator._runner.ports import SYSTEM_CLOCK, Clock

__all__ = [
    "AutoscalerSignal",
    "AutoscalerView",
    "Presence",
    "latest_signal",
    "latest_signals",
    "nodepool_room",
    "nodepools_admitting",
]

log = logging.getLogger("k8s_step_operator")

KARPENTER = "karpenter"
CLUSTER_AUTOSCALER = "cluster-autoscaler"
# An autoscaler the operator's identity cannot look for (the cluster autoscaler's status is not
# readable): it may exist, and speaks on the pod when it does.
UNSEEN = "unseen"
# Words of a refusal that may pass when capacity frees up (a NodePool or node group at its limit).
_LIMITED = ("exceed limits for nodepool", "max node group size reached", "max cluster")
_NODECLAIM = re.compile(r"nodeclaim/([-a-z0-9.]+)")


@dataclass(frozen=True)
class AutoscalerSignal:
    """The latest thing an autoscaler said about a pod.

    Attributes:
        source: ``karpenter`` or ``cluster-autoscaler``.
        scaling_up: A node is being added for the pod.
        limited: It will not add one now because a limit is reached (may pass later).
        message: Its words.
        nodeclaim: The NodeClaim Karpenter nominated, when it said one.
    """

    source: str
    scaling_up: bool
    limited: bool
    message: str
    nodeclaim: str = ""

    @property
    def who(self) -> str:
        """The autoscaler's name as people write it."""
        return "Karpenter" if self.source == KARPENTER else "the cluster autoscaler"

    @property
    def words(self) -> str:
        """``<who>: <message>``."""
        return f"{self.who}: {self.message}"


def _source(event: Event) -> str:
    src = event.get("source", {}).get("component") or event.get("reportingComponent") or ""
    return str(src)


def _signal(event: Event) -> AutoscalerSignal | None:
    reason = str(event.get("reason") or "")
    message = str(event.get("message") or "")
    source = _source(event)
    if source == KARPENTER or source.startswith("karpenter"):
        if reason == "Nominated":
            found = _NODECLAIM.search(message)
            claim = found.group(1) if found else ""
            return AutoscalerSignal(KARPENTER, True, False, message, claim)
        if reason == "FailedScheduling":
            limited = any(w in message for w in _LIMITED)
            return AutoscalerSignal(KARPENTER, False, limited, message)
        return None
    if reason == "TriggeredScaleUp":
        return AutoscalerSignal(CLUSTER_AUTOSCALER, True, False, message)
    if reason == "NotTriggerScaleUp":
        limited = any(w in message for w in _LIMITED)
        return AutoscalerSignal(CLUSTER_AUTOSCALER, False, limited, message)
    return None


def latest_signal(events: Sequence[Event], pod: str) -> AutoscalerSignal | None:
    """The latest autoscaler ``Event`` about ``pod`` (events oldest first), or ``None``."""
    signals = latest_signals(events, pod)
    return signals[-1] if signals else None


def latest_signals(events: Sequence[Event], pod: str) -> tuple[AutoscalerSignal, ...]:
    """What each autoscaler last said about ``pod``, oldest first (events oldest first).

    One autoscaler's "no" does not cancel another's "a node is being added": a cluster may run
    Karpenter and another autoscaler, each speaking for itself.
    """
    latest: dict[str, AutoscalerSignal] = {}
    for event in events:
        if event.get("involvedObject", {}).get("name") != pod:
            continue
        signal = _signal(event)
        if signal is not None:
            latest.pop(signal.source, None)
            latest[signal.source] = signal
    return tuple(latest.values())


def is_autoscaler_event(event: Event) -> bool:
    """Whether an autoscaler wrote the ``Event`` (its FailedScheduling is not the scheduler's)."""
    return _signal(event) is not None


# -- which NodePools could make a node for the pod ---------------------------------------------


def _allows(
    labels: Mapping[str, str],
    requirements: Sequence[NodeSelectorRequirement],
    key: str,
    values: Sequence[str],
) -> bool | None:
    """Whether a node of the pool may carry ``key`` with one of ``values`` (``None``: unknown)."""
    if key in labels:
        return labels[key] in values
    known = False
    for req in requirements:
        if req.get("key") != key:
            continue
        known = True
        op = req.get("operator")
        allowed = [str(v) for v in req.get("values") or []]
        if op == "In" and not set(values) & set(allowed):
            return False
        if op == "NotIn" and set(values) <= set(allowed):
            return False
        if op == "DoesNotExist":
            return False
    return True if known else None


def _refusal(pool: NodePool, pod_spec: PodSpec) -> str:
    """Why the NodePool can never make a node this pod accepts (``""``: it may)."""
    template = pool.get("spec", {}).get("template", {})
    labels = {str(k): str(v) for k, v in labels_of(template).items()}
    spec = template.get("spec", {})
    requirements = list(spec.get("requirements") or [])
    for key, value in pod_spec.get("nodeSelector", {}).items():
        if _allows(labels, requirements, str(key), [str(value)]) is False:
            return f"its nodes never have {key}={value}"
    terms = required_node_terms(pod_spec)
    if terms:
        ok_terms = 0
        for term in terms:
            blocked = False
            for expr in term.get("matchExpressions") or []:
                if expr.get("operator") == "In":
                    values = [str(v) for v in expr.get("values") or []]
                    if _allows(labels, requirements, str(expr.get("key")), values) is False:
                        blocked = True
            ok_terms += not blocked
        if ok_terms == 0:
            return "its nodes never match the step's required node affinity"
    tolerations = pod_spec.get("tolerations") or []
    for taint in spec.get("taints") or []:
        blocking = taint.get("effect") in ("NoSchedule", "NoExecute")
        if blocking and not tolerates(tolerations, taint):
            value = f"={taint['value']}" if taint.get("value") else ""
            return (
                f"its nodes carry the taint {taint.get('key')}{value}:{taint.get('effect')} "
                f"(a step meant for it tolerates it: {toleration_for(taint)})"
            )
    return ""


def nodepools_admitting(
    pod_spec: PodSpec, nodepools: Sequence[NodePool]
) -> tuple[list[str], list[str]]:
    """The NodePools that may make a node for the pod, and why each other one cannot.

    Judged on what the NodePool fixes (template labels, requirements, taints); labels it leaves
    to the instance type (the GPU model, say) are given the benefit of the doubt.

    Args:
        pod_spec: The pod's ``PodSpec``.
        nodepools: Karpenter's NodePools.

    Returns:
        ``(admitting names, ["<pool>: <why not>", ...])``.
    """
    admitting: list[str] = []
    refusals: list[str] = []
    for pool in nodepools:
        name = name_of(pool)
        why = _refusal(pool, pod_spec)
        if why:
            refusals.append(f"NodePool {name}: {why}")
        else:
            admitting.append(name)
    return admitting, refusals


def nodepool_room(pool: NodePool, pod_spec: PodSpec) -> int | None:
    """How many pods of ``pod_spec`` the NodePool's limits let it hold in all.

    Karpenter's limits cap the summed resources of a NodePool's nodes. ``None``: the NodePool
    limits none of the resources the pod requests.
    """
    limits = pool.get("spec", {}).get("limits") or {}
    counts: list[int] = []
    for resource, amount in pod_requests(pod_spec).items():
        if amount <= 0 or resource not in limits:
            continue
        try:
            counts.append(int(float(parse_quantity(limits[resource])) // amount))
        except ValueError:
            continue
    return min(counts) if counts else None


# -- which autoscalers exist ---------------------------------------------------------------------


class AutoscalerAccess(Protocol):
    """The two reads ``AutoscalerView`` makes."""

    def list_nodepools(self) -> list[NodePool]:
        """Karpenter's NodePools (``NotFoundError`` when Karpenter's API is not served)."""
        ...

    def get_configmap(self, namespace: str, name: str) -> ConfigMap:
        """A ConfigMap (``NotFoundError`` when absent)."""
        ...


@dataclass(frozen=True)
class Presence:
    """Which autoscalers a cluster has, as far as the operator's identity can tell.

    ``None`` means unknown (the identity may not look).
    """

    karpenter: bool | None
    nodepools: tuple[NodePool, ...] = ()
    cluster_autoscaler: bool | None = False


class AutoscalerView:
    """Which autoscalers the cluster runs, read at most every ``ttl`` seconds (one per operator)."""

    def __init__(self, api: AutoscalerAccess, clock: Clock = SYSTEM_CLOCK, ttl: float = 30.0):
        self.api = api
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, Presence] | None = None

    def presence(self) -> Presence:
        """The autoscalers present (cached)."""
        with self._lock:
            now = self.clock.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            karpenter: bool | None
            pools: list[NodePool] = []
            try:
                pools = self.api.list_nodepools()
                karpenter = True
            except NotFoundError:
                karpenter = False
            except (ForbiddenError, ApiError) as e:
                log.debug("cannot tell whether Karpenter runs: %s", e)
                karpenter = None
            ca: bool | None
            try:
                self.api.get_configmap(
                    CLUSTER_AUTOSCALER_STATUS_NAMESPACE, CLUSTER_AUTOSCALER_STATUS_CONFIGMAP
                )
                ca = True
            except NotFoundError:
                ca = False
            except (ForbiddenError, ApiError) as e:
                log.debug("cannot tell whether the cluster autoscaler runs: %s", e)
                ca = None
            presence = Presence(karpenter, tuple(pools), ca)
            self._cached = (now, presence)
            return presence
