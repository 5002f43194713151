"""Kubernetes objects as the API server returns them: the fields the code reads, typed.

Objects travel as decoded JSON (``_kube.access`` skips the client's models; watches deliver JSON
lines), so they are described here as ``TypedDict`` s, named after the API's kinds, with only the
fields something reads. Every field is optional (``total=False``): the server omits empty ones,
and the code reads each with a fallback. ``Required`` marks the few that a list entry always has
(a condition's type and status, a taint's key and effect...). Struct-valued fields are never
``null`` in the server's JSON, so ``obj.get("status", {})`` is their typed read; a field that may
be ``null`` says so (``| None``). Custom resources (Kueue, Karpenter) are described for the
versions the code reads, where these fields have one shape.

The bottom layer: it imports nothing of ours, and every layer may import it.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, Required, TypeAlias, TypedDict, TypeVar

__all__ = [
    "APIGroup",
    "APIGroupList",
    "Admission",
    "Affinity",
    "ClusterQueue",
    "ClusterQueueSpec",
    "Condition",
    "ConfigMap",
    "Container",
    "ContainerState",
    "ContainerStateRunning",
    "ContainerStateTerminated",
    "ContainerStateWaiting",
    "ContainerStatus",
    "Event",
    "EventSeries",
    "EventSource",
    "FlavorQuotas",
    "FlavorUsage",
    "GroupVersion",
    "Job",
    "JobSpec",
    "JobStatus",
    "KubeObject",
    "ListMeta",
    "LocalQueue",
    "LocalQueueSpec",
    "ManagedFieldsEntry",
    "Namespace",
    "Node",
    "NodeAffinity",
    "NodeClaimTemplate",
    "NodeClaimTemplateSpec",
    "NodePool",
    "NodePoolSpec",
    "NodeSelector",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "NodeSpec",
    "NodeStatus",
    "ObjectList",
    "ObjectMeta",
    "ObjectReference",
    "OwnerReference",
    "PendingWorkload",
    "Pod",
    "PodFailurePolicy",
    "PodFailurePolicyOnExitCodes",
    "PodFailurePolicyOnPodCondition",
    "PodFailurePolicyRule",
    "PodSetAssignment",
    "PodSpec",
    "PodStatus",
    "PodTemplateSpec",
    "Quantity",
    "QueueStatus",
    "ResourceGroup",
    "ResourceQuota",
    "ResourceQuotaEntry",
    "ResourceQuotaSpec",
    "ResourceQuotaStatus",
    "ResourceRequirements",
    "ResourceUsage",
    "SelfSubjectAccessReview",
    "Status",
    "StatusCause",
    "StatusDetails",
    "SubjectAccessReviewStatus",
    "Taint",
    "Toleration",
    "WatchError",
    "WatchEvent",
    "WatchLine",
    "Workload",
    "WorkloadStatus",
    "conditions_of",
    "labels_of",
    "name_of",
    "resource_version_of",
]

T = TypeVar("T")

Quantity: TypeAlias = str | int
"""``1``, ``500m``, ``16Gi``: a string as the server writes core objects; a custom resource keeps
the integer it was applied with (its schema is int-or-string)."""


# -- metadata ------------------------------------------------------------------------------------


class OwnerReference(TypedDict):
    """Who owns an object (a Job owns its pods and its Secret; a Job owns its Kueue Workload)."""

    kind: str
    name: str
    uid: str


class ManagedFieldsEntry(TypedDict, total=False):
    """Who set which fields, and when (``fieldsV1`` is a tree of ``f:<field>`` keys)."""

    manager: str
    operation: str
    time: str
    fieldsV1: dict[str, Any]


class ObjectMeta(TypedDict, total=False):
    """``metadata``; ``creationTimestamp`` is ``null`` only on objects not stored yet."""

    name: str
    namespace: str
    uid: str
    resourceVersion: str
    creationTimestamp: str | None
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]
    managedFields: list[ManagedFieldsEntry]


class KubeObject(TypedDict, total=False):
    """Any object, when only its metadata is read (every kind here is one)."""

    metadata: ObjectMeta


class Condition(TypedDict, total=False):
    """One of ``status.conditions``: the same fields on Jobs, pods, nodes and Kueue's objects."""

    type: Required[str]
    status: Required[Literal["True", "False", "Unknown"]]
    reason: str
    message: str


# -- pods and Jobs -------------------------------------------------------------------------------


class Toleration(TypedDict, total=False):
    """A pod's toleration; an empty ``key`` with ``Exists`` tolerates every taint."""

    key: str
    operator: Literal["Exists", "Equal"]
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Taint(TypedDict, total=False):
    """A node's taint, or one a Karpenter NodePool puts on its nodes."""

    key: Required[str]
    value: str
    effect: Required[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]]


class NodeSelectorRequirement(TypedDict, total=False):
    """``key operator values``: a node affinity term's, or a Karpenter NodePool's requirement."""

    key: Required[str]
    operator: Required[Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]]
    values: list[str]


class NodeSelectorTerm(TypedDict, total=False):
    """One term of a required node affinity: its expressions must all match."""

    matchExpressions: list[NodeSelectorRequirement]


class NodeSelector(TypedDict, total=False):
    """The terms of a required node affinity: one must match."""

    nodeSelectorTerms: list[NodeSelectorTerm]


class NodeAffinity(TypedDict, total=False):
    """Only the required part is read: the preferred part never rules a node out."""

    requiredDuringSchedulingIgnoredDuringExecution: NodeSelector


class Affinity(TypedDict, total=False):
    """A pod's affinity; only the node affinity is read."""

    nodeAffinity: NodeAffinity


class ResourceRequirements(TypedDict, total=False):
    """A container's requests and limits, by resource name."""

    requests: dict[str, Quantity]
    limits: dict[str, Quantity]


class Container(TypedDict, total=False):
    """A container of a pod spec; only its resources are read (the fit check)."""

    name: Required[str]
    resources: ResourceRequirements


class PodSpec(TypedDict, total=False):
    """What the fit check compares with nodes, and the node a pod was bound to."""

    containers: list[Container]
    nodeSelector: dict[str, str]
    affinity: Affinity
    tolerations: list[Toleration]
    nodeName: str


class ContainerStateWaiting(TypedDict, total=False):
    """``ErrImagePull``, ``CreateContainerConfigError``, ``ContainerCreating``..."""

    reason: str
    message: str


class ContainerStateRunning(TypedDict, total=False):
    """Only its presence is read."""

    startedAt: str


class ContainerStateTerminated(TypedDict, total=False):
    """How a container ended: ``exitCode`` always, ``reason`` such as ``OOMKilled``."""

    exitCode: int
    reason: str
    message: str


class ContainerState(TypedDict, total=False):
    """At most one of the three is set; ``{}`` before the kubelet reports."""

    waiting: ContainerStateWaiting
    running: ContainerStateRunning
    terminated: ContainerStateTerminated


class ContainerStatus(TypedDict, total=False):
    """A container's (or init container's) status in a pod's ``status``."""

    name: Required[str]
    state: ContainerState


class PodStatus(TypedDict, total=False):
    """A pod's phase, its conditions (``PodScheduled``) and its containers' states.

    ``reason`` and ``message`` are set when the kubelet rejected the pod before any container ran.
    """

    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
    reason: str
    message: str
    conditions: list[Condition]
    initContainerStatuses: list[ContainerStatus]
    containerStatuses: list[ContainerStatus]


class Pod(TypedDict, total=False):
    """A pod of a step's Job."""

    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class PodTemplateSpec(TypedDict, total=False):
    """A Job's pod template."""

    metadata: ObjectMeta
    spec: PodSpec


class PodFailurePolicyOnExitCodes(TypedDict, total=False):
    """A rule's exit codes: ``operator`` In or NotIn ``values``, of one container or any."""

    containerName: str
    operator: str
    values: list[int]


class PodFailurePolicyOnPodCondition(TypedDict, total=False):
    """A rule's pod condition (``DisruptionTarget`` True)."""

    type: str
    status: str


class PodFailurePolicyRule(TypedDict, total=False):
    """What a failed pod that matches does to the Job: FailJob, FailIndex, Ignore or Count."""

    action: str
    onExitCodes: PodFailurePolicyOnExitCodes
    onPodConditions: list[PodFailurePolicyOnPodCondition]


class PodFailurePolicy(TypedDict, total=False):
    """The Job's rules for failed pods, the first match wins."""

    rules: list[PodFailurePolicyRule]


class JobSpec(TypedDict, total=False):
    """What the runner reads of a Job's spec.

    ``suspend`` is how Kueue holds a queued Job; ``template`` is its pods' spec; a step on
    several nodes is ``Indexed`` with ``completions`` ranks, failed by its first failed pod
    (``backoffLimit`` 0) unless ``podFailurePolicy`` ignores it.
    """

    suspend: bool
    template: PodTemplateSpec
    completionMode: str
    completions: int
    parallelism: int
    backoffLimit: int
    podFailurePolicy: PodFailurePolicy


class JobStatus(TypedDict, total=False):
    """A Job's conditions: ``Complete``/``SuccessCriteriaMet``, ``Failed``, ``Suspended``..."""

    conditions: list[Condition]


class Job(TypedDict, total=False):
    """A batch/v1 Job, as the server returns it."""

    metadata: ObjectMeta
    spec: JobSpec
    status: JobStatus


# -- events --------------------------------------------------------------------------------------


class ObjectReference(TypedDict, total=False):
    """The object an event is about."""

    kind: str
    name: str
    namespace: str
    uid: str


class EventSource(TypedDict, total=False):
    """Who wrote an event (core/v1's older field): ``default-scheduler``, ``karpenter``..."""

    component: str


class EventSeries(TypedDict, total=False):
    """How often an event of events.k8s.io repeated."""

    count: int


class Event(TypedDict, total=False):
    """A core/v1 Event.

    The timestamps are ``null`` when their writer did not set them (``eventTime`` for events of
    the older API, ``lastTimestamp`` for those of events.k8s.io); the newer writer names itself
    in ``reportingComponent`` rather than ``source``.
    """

    metadata: ObjectMeta
    involvedObject: ObjectReference
    reason: str
    message: str
    source: EventSource
    reportingComponent: str
    lastTimestamp: str | None
    eventTime: str | None
    count: int
    series: EventSeries


# -- nodes and namespaces ------------------------------------------------------------------------


class NodeSpec(TypedDict, total=False):
    """Taints, and whether the node is cordoned."""

    taints: list[Taint]
    unschedulable: bool


class NodeStatus(TypedDict, total=False):
    """What a node has (``capacity``) and offers to pods (``allocatable``), and ``Ready``."""

    capacity: dict[str, Quantity]
    allocatable: dict[str, Quantity]
    conditions: list[Condition]


class Node(TypedDict, total=False):
    """A node; its labels say which GPU model it has."""

    metadata: ObjectMeta
    spec: NodeSpec
    status: NodeStatus


class ConfigMap(TypedDict, total=False):
    """Only whether it exists is read (the cluster autoscaler's status ConfigMap)."""

    metadata: ObjectMeta


class Namespace(TypedDict, total=False):
    """Only its labels are read (the Pod Security levels)."""

    metadata: ObjectMeta


class ResourceQuotaSpec(TypedDict, total=False):
    """The limits asked for."""

    hard: dict[str, Quantity]


class ResourceQuotaStatus(TypedDict, total=False):
    """The limits enforced, and what is used of them."""

    hard: dict[str, Quantity]
    used: dict[str, Quantity]


class ResourceQuota(TypedDict, total=False):
    """A namespace's ResourceQuota; ``status.hard`` lags ``spec.hard`` until the controller acts."""

    metadata: ObjectMeta
    spec: ResourceQuotaSpec
    status: ResourceQuotaStatus


class SubjectAccessReviewStatus(TypedDict, total=False):
    """The authorizer's answer; ``denied`` is a deny that no other authorizer may override."""

    allowed: bool
    denied: bool
    reason: str
    evaluationError: str


class SelfSubjectAccessReview(TypedDict, total=False):
    """The answer to "may I?"; only its status is read."""

    status: SubjectAccessReviewStatus


class GroupVersion(TypedDict, total=False):
    """One version an API group serves."""

    version: str


class APIGroup(TypedDict, total=False):
    """An API group and the versions it serves."""

    name: str
    versions: list[GroupVersion]


class APIGroupList(TypedDict, total=False):
    """``GET /apis``: the API groups the server serves."""

    groups: list[APIGroup]


# -- Kueue (kueue.x-k8s.io v1beta1 and v1beta2: the fields read have one shape) ----------------


class PodSetAssignment(TypedDict, total=False):
    """The ResourceFlavor Kueue chose per resource."""

    flavors: dict[str, str]


class Admission(TypedDict, total=False):
    """Where Kueue admitted a Workload."""

    clusterQueue: str
    podSetAssignments: list[PodSetAssignment]


class WorkloadStatus(TypedDict, total=False):
    """``QuotaReserved``, ``Admitted`` and ``Evicted`` conditions, and the admission."""

    conditions: list[Condition]
    admission: Admission


class Workload(TypedDict, total=False):
    """The Workload Kueue makes for a queued Job (owned by it, labelled with its uid)."""

    metadata: ObjectMeta
    status: WorkloadStatus


class PendingWorkload(TypedDict, total=False):
    """An entry of Kueue's visibility API (``localqueues/<name>/pendingworkloads``)."""

    metadata: ObjectMeta
    positionInLocalQueue: int


class ResourceUsage(TypedDict, total=False):
    """How much of one resource is reserved or used; ``borrowed`` only on ClusterQueues."""

    name: str
    total: Quantity
    borrowed: Quantity


class FlavorUsage(TypedDict, total=False):
    """``flavorsUsage`` / ``flavorsReservation``: per ResourceFlavor, per resource."""

    name: str
    resources: list[ResourceUsage]


class LocalQueueSpec(TypedDict, total=False):
    """The ClusterQueue a LocalQueue submits to; ``stopPolicy`` Hold pauses it."""

    clusterQueue: str
    stopPolicy: str


class QueueStatus(TypedDict, total=False):
    """A LocalQueue's or ClusterQueue's counts, usage and ``Active`` condition.

    ``flavorsReservation`` is a ClusterQueue's only.
    """

    pendingWorkloads: int
    reservingWorkloads: int
    admittedWorkloads: int
    flavorsUsage: list[FlavorUsage]
    flavorsReservation: list[FlavorUsage]
    conditions: list[Condition]


class LocalQueue(TypedDict, total=False):
    """A namespace's Kueue queue (what a step's ``queue_name`` names)."""

    metadata: ObjectMeta
    spec: LocalQueueSpec
    status: QueueStatus


class ResourceQuotaEntry(TypedDict, total=False):
    """One resource of a ClusterQueue's flavor; no ``borrowingLimit``: no limit in the cohort."""

    name: str
    nominalQuota: Quantity
    borrowingLimit: Quantity


class FlavorQuotas(TypedDict, total=False):
    """One ResourceFlavor of a resource group, with its resources' quotas."""

    name: str
    resources: list[ResourceQuotaEntry]


class ResourceGroup(TypedDict, total=False):
    """Resources that share flavors."""

    flavors: list[FlavorQuotas]


class ClusterQueueSpec(TypedDict, total=False):
    """The quota, and the cohort: ``cohortName`` in v1beta2, ``cohort`` in v1beta1."""

    resourceGroups: list[ResourceGroup]
    cohortName: str
    cohort: str
    stopPolicy: str


class ClusterQueue(TypedDict, total=False):
    """A cluster-wide Kueue queue: quota per flavor and resource."""

    metadata: ObjectMeta
    spec: ClusterQueueSpec
    status: QueueStatus


# -- Karpenter (karpenter.sh v1) -----------------------------------------------------------------


class NodeClaimTemplateSpec(TypedDict, total=False):
    """What every node of a NodePool satisfies, and the taints it starts with."""

    requirements: list[NodeSelectorRequirement]
    taints: list[Taint]


class NodeClaimTemplate(TypedDict, total=False):
    """The template of a NodePool's nodes; its metadata's labels are on every node."""

    metadata: ObjectMeta
    spec: NodeClaimTemplateSpec


class NodePoolSpec(TypedDict, total=False):
    """The template (the fit of a pending pod) and the limits (how many such pods in all)."""

    template: NodeClaimTemplate
    limits: dict[str, Quantity]


class NodePool(TypedDict, total=False):
    """A Karpenter NodePool: which nodes Karpenter may add."""

    metadata: ObjectMeta
    spec: NodePoolSpec


# -- lists, watches and errors -------------------------------------------------------------------


ListMeta = TypedDict("ListMeta", {"resourceVersion": str, "continue": str}, total=False)
"""A list's version (where a watch of the same kind starts); ``continue``: the next page's."""


class ObjectList(TypedDict, Generic[T], total=False):
    """A list of one kind, e.g. ``ObjectList[Pod]``."""

    metadata: ListMeta
    items: list[T]


class StatusCause(TypedDict, total=False):
    """One field the server refused, and why."""

    field: str
    reason: str
    message: str


class StatusDetails(TypedDict, total=False):
    """The refused fields, and how long to wait before retrying (429, 503)."""

    causes: list[StatusCause]
    retryAfterSeconds: int


class Status(TypedDict, total=False):
    """The server's error body, and the object of a watch's ``ERROR`` line."""

    code: int
    reason: str
    message: str
    details: StatusDetails


class WatchEvent(TypedDict, Generic[T]):
    """A watch line about an object; a ``BOOKMARK`` carries only ``metadata.resourceVersion``."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]
    object: T


class WatchError(TypedDict):
    """A watch line that ends the watch (code 410: the version is too old, re-list)."""

    type: Literal["ERROR"]
    object: Status


WatchLine: TypeAlias = WatchEvent[T] | WatchError
"""One decoded line of a watch of one kind; ``line["type"] == "ERROR"`` tells them apart."""


# -- typed reads shared by every layer -----------------------------------------------------------


def name_of(obj: KubeObject) -> str:
    """``metadata.name``, or ``""``."""
    return obj.get("metadata", {}).get("name", "")


def resource_version_of(obj: KubeObject) -> str:
    """``metadata.resourceVersion``, or ``""``."""
    return str(obj.get("metadata", {}).get("resourceVersion") or "")


def labels_of(obj: KubeObject) -> dict[str, str]:
    """``metadata.labels``, or ``{}``."""
    return obj.get("metadata", {}).get("labels", {})


def conditions_of(obj: Job | Pod | Node | Workload | LocalQueue | ClusterQueue) -> list[Condition]:
    """``status.conditions``, or ``[]``."""
    return obj.get("status", {}).get("conditions") or []
