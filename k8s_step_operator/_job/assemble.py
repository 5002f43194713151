"""A checked step in, the batch/v1 Job out: assembly only.

Nothing here decides or refuses: ``step_checks.validate_step`` has checked everything, so these
functions only write the objects, with the API's camelCase field names, as plain JSON-ready
dicts that can be printed, diffed, dry-run and submitted unchanged. An ``assert`` marks what
the validation stage guarantees.

A step of one rank is a Job of one pod. A step of several ranks (``spec.ranks > 1``) is an
Indexed Job of that many pods, all or nothing: ``backoffLimit`` 0 fails the Job at the first
failed rank (the Job controller then stops the others), and the Job succeeds when every rank
has (Kubernetes' own success criterion for Indexed Jobs: a rank that finished first does not
mean the others have, they may still be writing their part). The pods' subdomain is the Job's
headless Service (``ranks.build_rank_service``), and each gets the ranks' environment
(``ranks.rank_environment``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k8s_step_operator._job.kube_syntax import deep_copy
from k8s_step_operator._job.overrides import RESTRICTED_CONTAINER_CONTEXT, harden_init_containers
from k8s_step_operator._job.ranks import rank_environment
from k8s_step_operator._job.settings import Toleration
from k8s_step_operator._job.spec import (
    CONTAINER_NAME,
    SHM_MOUNT_PATH,
    SHM_VOLUME,
    StepSpec,
)

__all__ = ["assemble_job"]


def assemble_job(spec: StepSpec) -> dict[str, Any]:
    """Write the batch/v1 Job of a checked step.

    Returns:
        The Job as a JSON-ready dict with the API's field names.
    """
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": list(spec.command),
        "env": _env(spec),
    }
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.secret_env_from:
        container["envFrom"] = [{"secretRef": {"name": n}} for n in spec.secret_env_from]
    resources: dict[str, dict[str, str]] = {}
    if spec.requests:
        resources["requests"] = dict(spec.requests)
    if spec.limits:
        resources["limits"] = dict(spec.limits)
    if resources:
        container["resources"] = resources

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": spec.automount_service_account_token,
        "containers": [container],
    }
    if spec.service_account_name is not None:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    if spec.priority_class_name is not None:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.affinity:
        pod_spec["affinity"] = deep_copy(spec.affinity)
    tolerations = [_toleration(t) for t in spec.tolerations]
    if spec.gpu_taint_key is not None:
        tolerations.append(
            {"key": spec.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"}
        )
    if tolerations:
        pod_spec["tolerations"] = tolerations
    _security(spec, pod_spec, container)
    if spec.shm_size is not None:
        pod_spec["volumes"] = [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}
        ]
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": SHM_MOUNT_PATH}]
    _merge(container, spec.container_overrides)
    _merge(pod_spec, spec.pod_spec_overrides)
    if spec.security_profile == "restricted":
        harden_init_containers(pod_spec.get("initContainers", []))

    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "template": {
            "metadata": {
                "labels": dict(spec.pod_labels),
                "annotations": dict(spec.pod_annotations),
            },
            "spec": pod_spec,
        },
    }
    failure_policy = _pod_failure_policy(spec)
    if failure_policy is not None:
        job_spec["podFailurePolicy"] = failure_policy
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    if spec.suspend:
        job_spec["suspend"] = True
    if spec.ranks > 1:
        _indexed(spec, job_spec, pod_spec, container)

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": dict(spec.job_labels),
            "annotations": dict(spec.job_annotations),
        },
        "spec": job_spec,
    }


def _indexed(
    spec: StepSpec,
    job_spec: dict[str, Any],
    pod_spec: dict[str, Any],
    container: dict[str, Any],
) -> None:
    """Turn the Job of one pod into the Indexed Job of ``spec.ranks`` ranks."""
    job_spec["completionMode"] = "Indexed"
    job_spec["completions"] = job_spec["parallelism"] = spec.ranks
    pod_spec["subdomain"] = spec.name
    plain = len(spec.plain_env)
    container["env"][plain:plain] = rank_environment(
        spec.name,
        ranks=spec.ranks,
        procs_per_rank=spec.procs_per_rank,
        port=spec.rendezvous_port,
    )


def _env(spec: StepSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.plain_env]
    for name, ref in spec.secret_env:
        selector: dict[str, Any] = {"name": ref.name, "key": ref.key}
        if ref.optional:
            selector["optional"] = True
        env.append({"name": name, "valueFrom": {"secretKeyRef": selector}})
    for name, key in spec.generated_secret_env:
        assert spec.env_secret_name is not None
        env.append(
            {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": spec.env_secret_name, "key": key}},
            }
        )
    return env


def _toleration(t: Toleration) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if t.key:
        result["key"] = t.key
    result["operator"] = t.operator
    if t.operator != "Exists":
        result["value"] = t.value
    if t.effect:
        result["effect"] = t.effect
    if t.toleration_seconds is not None:
        result["tolerationSeconds"] = t.toleration_seconds
    return result


def _security(spec: StepSpec, pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    pod_ctx: dict[str, Any] = {}
    for key, value in (
        ("runAsUser", spec.run_as_user),
        ("runAsGroup", spec.run_as_group),
        ("fsGroup", spec.fs_group),
    ):
        if value is not None:
            pod_ctx[key] = value
    if spec.security_profile == "restricted":
        assert spec.run_as_user, "the restricted profile never runs as root"
        pod_ctx["runAsNonRoot"] = True
        pod_ctx["seccompProfile"] = {"type": "RuntimeDefault"}
        container["securityContext"] = deep_copy(RESTRICTED_CONTAINER_CONTEXT)
    if pod_ctx:
        pod_spec["securityContext"] = pod_ctx


def _merge(target: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Set each override; a list is appended to what the builder set (names are unique)."""
    for key, value in overrides.items():
        value = deep_copy(value)
        if isinstance(value, list):
            target[key] = [*target.get(key, []), *value]
        else:
            target[key] = value


def _pod_failure_policy(spec: StepSpec) -> dict[str, Any] | None:
    rules: list[dict[str, Any]] = []
    if spec.ignore_disruptions:
        # Preemption, eviction, node drain: not the step's fault, not counted against backoff.
        rules.append(
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
        )
    if spec.fail_on_exit_codes:
        rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": list(spec.fail_on_exit_codes),
                },
            }
        )
    return {"rules": rules} if rules else None
