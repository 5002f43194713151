"""PersistentVolumeClaims bind in the local cluster: the controller manager's volume binder
runs, the StorageClass ``local-storage`` exists, and ``e2e/cluster.py local-pv`` makes a
``local`` PersistentVolume pinned to one node.

On simulated nodes nothing is mounted; what these tests show is the API side: a claim waits for
its first consumer, the scheduler sends that pod to the volume's node and the two are bound.
(Writing through such a volume needs the real node: ``tests/realnode``.)
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.cluster.addon_support import (
    REPO,
    events_for,
    job,
    job_condition,
    job_pods,
    record,
    without_noise,
)
from tests.conftest import load_cluster_module, unavailable, wait_until

pytestmark = pytest.mark.cluster

STORAGE_CLASS = "local-storage"


@pytest.fixture
def local_pvs(api_client: k8s.ApiClient) -> Iterator[list[str]]:
    """Names of PersistentVolumes a test made; they are cluster-wide, so deleted afterwards."""
    try:
        k8s.StorageV1Api(api_client).read_storage_class(STORAGE_CLASS)
    except ApiException as e:
        if e.status != 404:
            raise
        unavailable(f"StorageClass {STORAGE_CLASS} is missing (`make cluster` creates it)")
    names: list[str] = []
    yield names
    core = k8s.CoreV1Api(api_client)
    for n in names:
        try:
            core.delete_persistent_volume(n)
        except ApiException as e:
            if e.status != 404:
                raise


def claim(name: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": STORAGE_CLASS,
            "resources": {"requests": {"storage": size}},
        },
    }


def test_claim_binds_to_a_local_volume_and_its_pod_goes_to_that_node(
    api_client: k8s.ApiClient,
    namespace: str,
    local_pvs: list[str],
    local_cluster: Any,
    tmp_path: Path,
) -> None:
    core = k8s.CoreV1Api(api_client)
    # The volume is pinned to one of the two H100 nodes: the pod could go to either, and must
    # go to that one.
    node = "gpu-h100-1"
    pv_name = f"local-{uuid.uuid4().hex[:8]}"
    local_pvs.append(pv_name)
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "e2e" / "cluster.py"),
            "local-pv",
            pv_name,
            str(tmp_path / "data"),
            "--node",
            node,
            "--size",
            "2Gi",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data").is_dir()
    pv = core.read_persistent_volume(pv_name)
    assert pv.spec.local.path == str(tmp_path / "data")
    assert pv.status.phase == "Available"

    core.create_namespaced_persistent_volume_claim(namespace, claim("data"))
    # WaitForFirstConsumer: nothing binds before a pod needs the claim.
    pending = wait_until(
        "the claim to wait for its consumer",
        lambda: [
            e
            for e in events_for(api_client, namespace, "PersistentVolumeClaim", "data")
            if e["reason"] == "WaitForFirstConsumer"
        ],
        30,
    )
    assert core.read_namespaced_persistent_volume_claim("data", namespace).status.phase == "Pending"

    h100 = load_cluster_module().pools()["h100"]
    k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace,
        job(
            "uses-data",
            gpus=1,
            placement={
                "nodeSelector": dict(h100["node_selector"]),
                "tolerations": [dict(t) for t in h100["tolerations"]],
            },
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        ),
    )
    wait_until(
        "the Job to complete",
        lambda: job_condition(api_client, namespace, "uses-data", "Complete"),
        60,
    )
    (pod,) = job_pods(api_client, namespace, "uses-data")
    assert pod.spec.node_name == node
    pvc = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.status.phase == "Bound"
    assert pvc.spec.volume_name == pv_name
    pv = core.read_persistent_volume(pv_name)
    assert pv.status.phase == "Bound"
    assert (pv.spec.claim_ref.namespace, pv.spec.claim_ref.name) == (namespace, "data")
    record("pv-waitforfirstconsumer-event", pending)
    record("pv-bound-claim", without_noise(api_client.sanitize_for_serialization(pvc)))
    record("pv-bound-volume", without_noise(api_client.sanitize_for_serialization(pv)))


def test_a_claim_no_volume_can_satisfy_leaves_its_pod_unschedulable(
    api_client: k8s.ApiClient, namespace: str, local_pvs: list[str], local_cluster: Any
) -> None:
    core = k8s.CoreV1Api(api_client)
    core.create_namespaced_persistent_volume_claim(namespace, claim("huge", "100Ti"))
    k8s.BatchV1Api(api_client).create_namespaced_job(
        namespace,
        job(
            "needs-huge",
            gpus=0,
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "huge"}}],
        ),
    )

    def unschedulable() -> Any:
        for p in job_pods(api_client, namespace, "needs-huge"):
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False":
                    return c
        return None

    cond = wait_until("PodScheduled=False", unschedulable, 30)
    assert cond.reason == "Unschedulable"
    assert "didn't find available persistent volumes to bind" in cond.message
    record("pv-unschedulable-condition", {"reason": cond.reason, "message": cond.message})
