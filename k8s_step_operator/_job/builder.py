"""Settings in, a batch/v1 Job out: a pure function, no API client, no I/O.

``build_job`` is two stages: ``step_checks.validate_step`` checks everything Kubernetes would
refuse (and every rule of this library) and raises a ``ConfigurationError`` that names *our*
field (``settings.gpu_vendor``, ``environment['HF_TOKEN']`` ...) and says what is accepted; then
``assemble.assemble_job`` writes the Job from the checked ``StepSpec``. The result is a plain
JSON-ready dict with the API's camelCase field names, so it can be printed, diffed, dry-run and
submitted unchanged.

Choices made here, each overridable by a setting:

* CPU is requested, not limited (``cpu_limit`` opts in: limits throttle); memory request equals
  its limit (the step is OOM-killed past what it asked for); GPUs: integers, request == limit.
* The vendor's GPU taint is tolerated when GPUs are requested (``gpu_tolerations``).
* The Pod Security "restricted" profile applies (``pod_security_profile="none"`` opts out); the
  user is 1000 unless ``run_as_user`` says otherwise, so images built to run as root still start.
* Plain variables whose names look like secrets are refused (``allow_secret_like_env``);
  ``PYTHONUNBUFFERED=1`` is added unless set, so a step's prints reach the log as they happen.
  Values that must not appear in the Job go in its own Secret (``secret_environment``).
* No retries (``backoff_limit=0``); evictions and preemptions do not count as failures; finished
  Jobs are deleted after 600 s.
* One Job per attempt: its name hashes the run id, the step name and the step run id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from k8s_step_operator._job.assemble import assemble_job
from k8s_step_operator._job.env_secret import build_env_secret
from k8s_step_operator._job.gpu import GPU_LABEL_SCHEMES, GPULabelScheme
from k8s_step_operator._job.settings import KubernetesJobStepOperatorSettings
from k8s_step_operator._job.step_checks import (
    NO_SECRET_ENVIRONMENT,
    check_job_size,
    validate_step,
)
from k8s_step_operator._step_operator_api.step_run_info import StepRunInfo

__all__ = ["build_env_secret", "build_job"]


def build_job(
    info: StepRunInfo,
    entrypoint_command: Sequence[str],
    environment: Mapping[str, str],
    settings: KubernetesJobStepOperatorSettings,
    *,
    namespace: str | None = None,
    secret_environment: Mapping[str, str] = NO_SECRET_ENVIRONMENT,
    gpu_label_schemes: Mapping[str, GPULabelScheme] = GPU_LABEL_SCHEMES,
) -> dict[str, Any]:
    """Build the batch/v1 Job that runs one step.

    Args:
        info: The step run: ids and names (for the Job's name, labels, annotations), resource
            settings, and the image when ``settings.image`` is unset.
        entrypoint_command: The container's command, as a list (never a shell string).
        environment: Plain environment variables for the step.
        settings: The merged settings (a component config works too).
        namespace: Overrides ``settings.namespace``.
        secret_environment: Variables whose values must not appear in the Job: the container
            reads them from the Job's own Secret (``build_env_secret`` writes it), by name.
        gpu_label_schemes: The label schemes ``settings.gpu_label_scheme`` may name, by name:
            the built-in ones, or a table with schemes of the caller's own, such as
            ``{**GPU_LABEL_SCHEMES, scheme.name: scheme}``.

    Returns:
        The Job as a JSON-ready dict with the API's field names.

    Raises:
        ConfigurationError: If any input would be refused by Kubernetes or breaks a rule of this
            library (the Job too big to store included); nothing has been sent.
    """
    spec = validate_step(
        info,
        entrypoint_command,
        environment,
        settings,
        namespace=namespace,
        secret_environment=secret_environment,
        gpu_label_schemes=gpu_label_schemes,
    )
    job = assemble_job(spec)
    check_job_size(
        job,
        {
            "environment": environment,
            "settings.env": settings.env,
            "entrypoint_command": entrypoint_command,
            "settings.pod_spec_overrides": settings.pod_spec_overrides,
            "settings.container_overrides": settings.container_overrides,
            "settings.annotations": settings.annotations,
            "settings.pod_annotations": settings.pod_annotations,
            "settings.affinity": settings.affinity,
        },
    )
    return job
