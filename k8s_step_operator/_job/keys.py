"""Every label and annotation key the project sets or reads, in one place.

Three owners write keys on the objects the operator deals with, and each key belongs to exactly
one of them:

* **ours** (``k8s-step-operator.io/``, plus the well-known ``app.kubernetes.io/managed-by``): the
  raw identity of the step in annotations (annotations accept any string), the same identity as
  label values (sanitized, for selectors), who manages the Job, and which launcher (the operator
  instance that submitted it) follows it, on the Job and its pod template;
* **Kubernetes**: the Job controller labels the pods of a Job with its name and uid (the
  ``batch.kubernetes.io/`` keys, and the legacy unprefixed ones older clusters still write);
  Pod Security reads the namespace's ``pod-security.kubernetes.io/`` labels; AppArmor and seccomp
  once lived in pod annotations, which the API server still validates;
* **Kueue**: the LocalQueue and the WorkloadPriorityClass of a Job are labels.

A user may not set a key that one of these owners sets or validates (``is_reserved_key``):
either it would be overwritten, or it would change what the owner does behind the settings'
back. Keys of test fixtures (the simulated nodes' ``sim.k8s-step-operator.io/``) are not listed:
they belong to the tests, and are ordinary user keys here.
"""

from __future__ import annotations

__all__ = [
    "ANNOTATION_PIPELINE_NAME",
    "ANNOTATION_PREFIX",
    "ANNOTATION_RUN_ID",
    "ANNOTATION_RUN_NAME",
    "ANNOTATION_STEP_NAME",
    "ANNOTATION_STEP_RUN_ID",
    "APPARMOR_ANNOTATION_PREFIX",
    "JOB_COMPLETION_INDEX_ANNOTATION",
    "JOB_CONTROLLER_UID_LABEL",
    "JOB_NAME_LABEL",
    "KUEUE_JOB_UID_LABEL",
    "KUEUE_PREFERRED_TOPOLOGY_ANNOTATION",
    "KUEUE_PRIORITY_CLASS_LABEL",
    "KUEUE_QUEUE_LABEL",
    "KUEUE_REQUIRED_TOPOLOGY_ANNOTATION",
    "LABEL_LAUNCHER",
    "LABEL_MANAGED_BY",
    "LABEL_RUN_ID",
    "LABEL_STEP_NAME",
    "LABEL_STEP_RUN_ID",
    "LEGACY_CONTROLLER_UID_LABEL",
    "LEGACY_JOB_NAME_LABEL",
    "MANAGED_BY",
    "MANAGED_BY_SELECTOR",
    "POD_SECURITY_LABEL_PREFIX",
    "RESERVED_KEYS",
    "RESERVED_KEY_PREFIXES",
    "SECCOMP_ANNOTATION_PREFIXES",
    "is_reserved_key",
]

# --- ours ------------------------------------------------------------------------------------
ANNOTATION_PREFIX = "k8s-step-operator.io/"
# Annotations carry the raw strings: run ids and step names may be any text.
ANNOTATION_RUN_ID = ANNOTATION_PREFIX + "run-id"
ANNOTATION_STEP_RUN_ID = ANNOTATION_PREFIX + "step-run-id"
ANNOTATION_STEP_NAME = ANNOTATION_PREFIX + "step-name"
ANNOTATION_RUN_NAME = ANNOTATION_PREFIX + "run-name"
ANNOTATION_PIPELINE_NAME = ANNOTATION_PREFIX + "pipeline-name"
# Labels carry the same identity as label values (``naming.label_value``), for selectors.
LABEL_RUN_ID = ANNOTATION_PREFIX + "run-id"
LABEL_STEP_NAME = ANNOTATION_PREFIX + "step-name"
LABEL_STEP_RUN_ID = ANNOTATION_PREFIX + "step-run-id"
# The launcher that submitted the Job, on the Job and its pod template: its watches select on it,
# so a process receives the events of its own steps only. A runtime identity, set at submission.
LABEL_LAUNCHER = ANNOTATION_PREFIX + "launcher"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "k8s-step-operator"
MANAGED_BY_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

# --- Kubernetes' Job controller (on the pods of a Job) -----------------------------------------
JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# On each pod of an Indexed Job: its completion index (the rank of a step of several ranks).
JOB_COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Written next to the prefixed ones until Kubernetes drops them; older clusters write only these.
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"

# --- Kubernetes' Pod Security admission (on namespaces) ---------------------------------------
POD_SECURITY_LABEL_PREFIX = "pod-security.kubernetes.io/"

# --- Kubernetes' validated pod annotations -----------------------------------------------------
# The API server checks these (the container must exist, the profile must be well formed) and
# Pod Security judges them; the security profile sets seccomp and AppArmor, not annotations.
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_ANNOTATION_PREFIXES = (
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
)

# --- Kueue (on the Job) --------------------------------------------------------------------------
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
# Set by Kueue on the Workload it makes for a Job: the Job's uid.
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
# On the pod template: the topology level (a node label) all pods of the Job must (or should)
# share, for Kueue's topology-aware scheduling.
KUEUE_REQUIRED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-required-topology"
KUEUE_PREFERRED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-preferred-topology"

# --- the cluster autoscaler (read, never written) ---------------------------------------------
# The ConfigMap in which the cluster autoscaler publishes its status: its presence says one runs.
CLUSTER_AUTOSCALER_STATUS_NAMESPACE = "kube-system"
CLUSTER_AUTOSCALER_STATUS_CONFIGMAP = "cluster-autoscaler-status"

# --- what users may not set -------------------------------------------------------------------
RESERVED_KEY_PREFIXES: tuple[str, ...] = (
    "kubernetes.io/",
    "k8s.io/",
    "batch.kubernetes.io/",
    ANNOTATION_PREFIX,
    APPARMOR_ANNOTATION_PREFIX,
    *SECCOMP_ANNOTATION_PREFIXES,
)
RESERVED_KEYS: frozenset[str] = frozenset(
    {
        LABEL_MANAGED_BY,
        KUEUE_QUEUE_LABEL,
        KUEUE_PRIORITY_CLASS_LABEL,
        LEGACY_CONTROLLER_UID_LABEL,
        LEGACY_JOB_NAME_LABEL,
    }
)


def is_reserved_key(key: str) -> bool:
    """Whether ``key`` is set or validated by this library, Kubernetes or Kueue."""
    return key in RESERVED_KEYS or key.startswith(RESERVED_KEY_PREFIXES)
