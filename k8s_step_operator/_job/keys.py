"""Every label and annotation key the project sets or reads, in one place."""

from __future__ import annotations

__all__ = [
    "LABEL_CONTROLLER_UID",
    "LABEL_JOB_NAME",
    "LABEL_JOB_NAME_LEGACY",
    "LABEL_MANAGED_BY",
    "LABEL_QUEUE_NAME",
    "MANAGED_BY",
]

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "k8s-step-operator"
# Set by the Job controller on every pod it creates.
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LABEL_JOB_NAME_LEGACY = "job-name"
# Kueue's LocalQueue of a Job.
LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
