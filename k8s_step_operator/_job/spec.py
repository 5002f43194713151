"""A step, fully checked: what the validation stage hands the assembler.

``StepSpec`` is the boundary between deciding and writing. Everything in it has been checked
and normalized (names, labels, quantities, the GPU resource and selector, the environment, the
security profile, the overrides), so that turning it into a Job is plain assembly that cannot
fail. It is frozen; the JSON values inside it (affinity, overrides) are private copies that the
assembler copies again, so that no Job ever aliases a spec or the settings it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from k8s_step_operator._job.settings import DEFAULT_RENDEZVOUS_PORT, SecretKeyRef, Toleration

__all__ = [
    "CONTAINER_NAME",
    "ENV_SECRET_SUFFIX",
    "IMAGE_KEY",
    "SHM_MOUNT_PATH",
    "SHM_VOLUME",
    "StepSpec",
]

CONTAINER_NAME = "step"
# The key of the step's image in StepRunInfo.images (what get_docker_builds declares).
IMAGE_KEY = "kubernetes_job_step_operator"
SHM_VOLUME = "dshm"
SHM_MOUNT_PATH = "/dev/shm"
# The Job's own Secret (secret environment values) is named ``<job name>-env``: at most 67
# characters, a DNS subdomain because the Job's name is a DNS label.
ENV_SECRET_SUFFIX = "-env"


@dataclass(frozen=True)
class StepSpec:
    """One attempt of one step, checked and normalized, ready to become a Job.

    Attributes:
        name: The Job's name (``naming.job_name`` of the three ids).
        namespace: The Job's namespace.
        job_labels: Every label of the Job: the user's, ours, Kueue's.
        job_annotations: Every annotation of the Job.
        pod_labels: Every label of the pod template.
        pod_annotations: Every annotation of the pod template.
        image: The container image.
        command: The container's command.
        image_pull_policy: The pull policy, or None for Kubernetes' default.
        plain_env: Plain variables, in order, ``PYTHONUNBUFFERED`` included.
        secret_env: Variables read from the user's Secrets.
        generated_secret_env: Variables read from the Job's own Secret: (name, key).
        env_secret_name: The Job's own Secret, when there are such variables.
        secret_env_from: Secrets whose every key becomes a variable.
        requests: Resource requests (quantities as strings).
        limits: Resource limits.
        service_account_name: The pod's ServiceAccount, or None.
        automount_service_account_token: Whether the token is mounted.
        image_pull_secrets: Secrets used to pull the image.
        priority_class_name: The pod's PriorityClass, or None.
        node_selector: The node selector, the GPU model's label included.
        affinity: The affinity, the GPU model alias's node expression included, or None.
        tolerations: The user's tolerations.
        gpu_taint_key: A GPU taint to tolerate on top of them, or None.
        security_profile: ``restricted`` or ``none``.
        run_as_user: The pod's UID (the default one under the restricted profile), or None.
        run_as_group: The pod's GID, or None.
        fs_group: The pod's fsGroup, or None.
        shm_size: The size of the in-memory /dev/shm, or None.
        pod_spec_overrides: Checked pod-spec fields, merged last.
        container_overrides: Checked container fields, merged last.
        backoff_limit: The Job's backoffLimit.
        ignore_disruptions: Whether disruptions do not count as failures.
        fail_on_exit_codes: Exit codes that fail the Job at once (unique, ascending).
        active_deadline_seconds: The Job's activeDeadlineSeconds, or None.
        ttl_seconds_after_finished: The Job's ttlSecondsAfterFinished, or None.
        suspend: Whether the Job is created suspended (for Kueue to admit).
        ranks: The number of ranks (pods); 1 is a Job of one pod, more an Indexed Job.
        rendezvous_port: Rank 0's rendezvous port (``ranks > 1``).
        procs_per_rank: Processes each rank runs: its GPUs, 1 without any (``ranks > 1``).
    """

    name: str
    namespace: str
    job_labels: Mapping[str, str]
    job_annotations: Mapping[str, str]
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    image: str
    command: tuple[str, ...]
    image_pull_policy: str | None
    plain_env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, SecretKeyRef], ...]
    generated_secret_env: tuple[tuple[str, str], ...]
    env_secret_name: str | None
    secret_env_from: tuple[str, ...]
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    service_account_name: str | None
    automount_service_account_token: bool
    image_pull_secrets: tuple[str, ...]
    priority_class_name: str | None
    node_selector: Mapping[str, str]
    affinity: Mapping[str, Any] | None
    tolerations: tuple[Toleration, ...]
    gpu_taint_key: str | None
    security_profile: Literal["restricted", "none"]
    run_as_user: int | None
    run_as_group: int | None
    fs_group: int | None
    shm_size: str | None
    pod_spec_overrides: Mapping[str, Any]
    container_overrides: Mapping[str, Any]
    backoff_limit: int
    ignore_disruptions: bool
    fail_on_exit_codes: tuple[int, ...]
    active_deadline_seconds: int | None
    ttl_seconds_after_finished: int | None
    suspend: bool
    ranks: int = 1
    rendezvous_port: int = DEFAULT_RENDEZVOUS_PORT
    procs_per_rank: int = 1
