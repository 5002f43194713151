"""The Job's own Secret: environment values that must not appear in the Job.

A value that is a credential (ZenML's ``ZENML_STORE_API_TOKEN``, scoped to the run) must not be
a plain variable of the pod spec, which anyone who may read Jobs reads. ``build_job(...,
secret_environment={NAME: value})`` makes the step's container read each such variable by
``secretKeyRef`` from a Secret named after the Job (``<job name>-env``, one key per variable,
the variable's name); the values are in that Secret only. ``build_env_secret`` writes the Secret
once the Job exists: with an owner reference to the Job, the garbage collector deletes it with
the Job (``controller`` and ``blockOwnerDeletion`` false: the Job controller does not manage it,
and deleting the Job never waits for it).

Create the Secret right after the Job: until it exists the kubelet reports the container as
waiting for its configuration and retries, which the runner tolerates for
``missing_config_grace`` seconds.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.keys import (
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    LABEL_STEP_NAME,
    LABEL_STEP_RUN_ID,
)
from k8s_step_operator._job.spec import ENV_SECRET_SUFFIX

__all__ = ["build_env_secret", "env_secret_name"]


def env_secret_name(job_name: str) -> str:
    """The name of the Secret that holds a Job's secret environment values."""
    return job_name + ENV_SECRET_SUFFIX


def build_env_secret(
    job: Mapping[str, Any], values: Mapping[str, str], *, job_uid: str
) -> dict[str, Any]:
    """The v1 Secret with the secret environment values of ``job``, owned by the Job.

    The Job (built with ``secret_environment``) reads each of these variables from this Secret
    by ``secretKeyRef``; the values appear nowhere else. The Secret carries the Job's identity
    labels and an owner reference to it, so the garbage collector deletes it with the Job.

    Args:
        job: The Job as built (a dict), for its name, namespace, labels and references.
        values: The value of every variable the Job reads from its Secret.
        job_uid: The uid the API server gave the Job when it was created.

    Returns:
        The Secret as a JSON-ready dict (type Opaque, values base64 in ``data``).

    Raises:
        ConfigurationError: If ``values`` are not exactly the variables the Job reads from the
            Secret, or a value is not a string, or ``job_uid`` is empty.
    """
    metadata = job["metadata"]
    name = env_secret_name(str(metadata["name"]))
    keys: dict[str, str] = {}
    for container in job["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env", []):
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == name:
                keys[entry["name"]] = ref["key"]
    if set(values) != set(keys):
        raise ConfigurationError(
            "values",
            "a value for exactly the variables the Job reads from its Secret ("
            + ", ".join(sorted(keys))
            + ")",
            ", ".join(sorted(set(values) ^ set(keys))),
        )
    data: dict[str, str] = {}
    for variable, value in values.items():
        if not isinstance(value, str):
            # Never echo the value.
            raise ConfigurationError(f"values[{variable!r}]", "a string", None)
        data[keys[variable]] = base64.b64encode(value.encode("utf-8")).decode("ascii")
    if not job_uid:
        raise ConfigurationError("job_uid", "the uid of the created Job", job_uid)
    labels = {
        k: v
        for k, v in (metadata.get("labels") or {}).items()
        if k in (LABEL_MANAGED_BY, LABEL_RUN_ID, LABEL_STEP_NAME, LABEL_STEP_RUN_ID)
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": metadata["name"],
                    "uid": job_uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "type": "Opaque",
        "data": data,
    }
