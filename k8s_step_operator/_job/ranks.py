"""Steps of several ranks: what each rank is told, and the headless Service that names rank 0.

A step with ``num_nodes = N > 1`` is one Indexed Job of N pods (``parallelism = completions =
N``): the Job controller gives each pod its completion index (the rank, 0 to N-1) and the
hostname ``<job>-<index>``. The pods' ``subdomain`` is a headless Service named after the Job,
so every rank resolves rank 0 as ``<job>-0.<job>`` (through the namespace's DNS search path, in
any cluster domain) from the moment its pod has an address (``publishNotReadyAddresses``).

Every rank gets the environment the usual launchers read, with the same values on every rank
except its index:

* torch.distributed's ``env://``: ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` (ranks times
  processes per rank) and, with one process per rank, ``RANK`` and ``LOCAL_RANK``;
* ``NNODES``, ``NODE_RANK`` (the completion index) and ``NPROC_PER_NODE`` (the rank's GPUs, 1
  without any), which launch scripts pass on to ``torchrun``, DeepSpeed or Accelerate;
* torchrun's own ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR``
  and ``PET_MASTER_PORT``, so that a bare ``torchrun train.py`` joins the others.

The Service is created by the runner right after the Job, owned by it (the garbage collector
deletes it with the Job), like the Job's own Secret (``env_secret``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k8s_step_operator._errors import ConfigurationError
from k8s_step_operator._job.keys import (
    JOB_COMPLETION_INDEX_ANNOTATION,
    JOB_CONTROLLER_UID_LABEL,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    LABEL_STEP_NAME,
    LABEL_STEP_RUN_ID,
)

__all__ = [
    "DISTRIBUTED_ENV",
    "RENDEZVOUS_PORT_NAME",
    "build_rank_service",
    "master_address",
    "rank_environment",
    "ranks_of",
]

# Every variable the operator sets on the ranks of a step of several ranks; the user may not set
# them there (they would contradict the number of ranks).
DISTRIBUTED_ENV: tuple[str, ...] = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "PET_NNODES",
    "PET_NODE_RANK",
    "PET_NPROC_PER_NODE",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)
RENDEZVOUS_PORT_NAME = "rendezvous"


def master_address(job_name: str) -> str:
    """Rank 0's name, as every rank of the Job resolves it: ``<job>-0.<job>``."""
    return f"{job_name}-0.{job_name}"


def rank_environment(
    job_name: str, *, ranks: int, procs_per_rank: int, port: int
) -> list[dict[str, Any]]:
    """The environment entries (the API's ``EnvVar``) every rank of the Job gets.

    Args:
        job_name: The Job's name (also its headless Service's).
        ranks: The number of ranks (pods).
        procs_per_rank: Processes each rank runs: its GPUs, 1 without any.
        port: Rank 0's rendezvous port.
    """
    master = master_address(job_name)
    entries: list[dict[str, Any]] = [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(port)},
        {"name": "WORLD_SIZE", "value": str(ranks * procs_per_rank)},
        {"name": "NNODES", "value": str(ranks)},
        _index("NODE_RANK"),
        {"name": "NPROC_PER_NODE", "value": str(procs_per_rank)},
    ]
    if procs_per_rank == 1:
        # One process per pod: it is the rank, and torch.distributed's env:// needs no launcher.
        entries += [_index("RANK"), {"name": "LOCAL_RANK", "value": "0"}]
    entries += [
        {"name": "PET_NNODES", "value": str(ranks)},
        _index("PET_NODE_RANK"),
        {"name": "PET_NPROC_PER_NODE", "value": str(procs_per_rank)},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(port)},
    ]
    return entries


def _index(name: str) -> dict[str, Any]:
    """``name`` set to the pod's completion index (what the Job controller annotates it with)."""
    path = f"metadata.annotations['{JOB_COMPLETION_INDEX_ANNOTATION}']"
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def ranks_of(job: Mapping[str, Any]) -> int:
    """How many ranks a Job (as built, or as the server has it) runs: 1 unless Indexed."""
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return 1
    return int(spec.get("completions") or 1)


def build_rank_service(job: Mapping[str, Any], *, job_uid: str) -> dict[str, Any]:
    """The headless v1 Service that gives the ranks of ``job`` their names, owned by the Job.

    Its name is the Job's (the pods' ``subdomain``); it selects the Job's pods by the Job's uid
    and publishes them before they are ready, so rank 0 resolves as soon as it has an address.

    Args:
        job: The Job as built (a dict), for its name, namespace, labels and rendezvous port.
        job_uid: The uid the API server gave the Job when it was created.

    Returns:
        The Service as a JSON-ready dict.

    Raises:
        ConfigurationError: If ``job`` is not a Job of several ranks, or ``job_uid`` is empty.
    """
    metadata = job["metadata"]
    name = str(metadata["name"])
    if ranks_of(job) < 2:
        raise ConfigurationError("job", "a Job of several ranks (completionMode Indexed)", name)
    if not job_uid:
        raise ConfigurationError("job_uid", "the uid of the created Job", job_uid)
    port = _rendezvous_port(job)
    labels = {
        k: v
        for k, v in (metadata.get("labels") or {}).items()
        if k in (LABEL_MANAGED_BY, LABEL_RUN_ID, LABEL_STEP_NAME, LABEL_STEP_RUN_ID)
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job_uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_CONTROLLER_UID_LABEL: job_uid},
            "ports": [
                {"name": RENDEZVOUS_PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}
            ],
        },
    }


def _rendezvous_port(job: Mapping[str, Any]) -> int:
    for container in job["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env") or []:
            if entry.get("name") == "MASTER_PORT" and "value" in entry:
                return int(entry["value"])
    raise ConfigurationError("job", "a Job whose containers have MASTER_PORT", None)
