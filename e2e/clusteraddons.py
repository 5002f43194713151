"""The local cluster's optional parts: Kueue, Karpenter, and local PersistentVolumes.

Why a module of its own: these are the objects a production GPU cluster adds on top of plain
Kubernetes (a queue in front of the scheduler, an autoscaler behind it, volumes for data), and
tests build the same objects for their own namespaces. ``cluster.py`` decides when to start and
install them; this module only says what they look like, so it takes addresses and paths as
arguments and talks to the API server through a :class:`clusterkit.RestClient`.

Every object is applied with server-side apply, so installing again is a no-op and a changed
manifest updates what the API server has.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from clusterkit import LOOPBACK, RestClient

FIELD_MANAGER = "k8sso-local-cluster"
E2E = Path(__file__).resolve().parent

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Objects


def load_docs(path: Path) -> list[Obj]:
    """The YAML (or JSON) documents of ``path``, empty ones left out."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def object_path(obj: Mapping[str, Any]) -> str:
    """The REST path of one object: core and named groups, namespaced or cluster-scoped.

    The resource name is the kind in lower case plus ``s`` (``es`` after an ``s``), which holds
    for every kind this cluster installs.
    """
    api_version = str(obj["apiVersion"])
    kind = str(obj["kind"]).lower()
    plural = kind + ("es" if kind.endswith("s") else "s")
    meta = obj["metadata"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = meta.get("namespace")
    where = f"/namespaces/{ns}" if ns else ""
    return f"{base}{where}/{plural}/{meta['name']}"


def apply(api: RestClient, obj: Mapping[str, Any]) -> Obj:
    """Server-side apply ``obj`` (created when missing); the object as the server has it."""
    path = object_path(obj) + f"?fieldManager={FIELD_MANAGER}&force=true"
    code, body = api.request("PATCH", path, dict(obj), "application/apply-patch+yaml")
    if code not in (200, 201):
        what = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        raise RuntimeError(f"applying {what} failed: HTTP {code}: {body}")
    result: Obj = body
    return result


def delete(api: RestClient, obj: Mapping[str, Any]) -> bool:
    """Delete ``obj`` if it exists; True when it did."""
    code, body = api.request("DELETE", object_path(obj))
    if code not in (200, 202, 404):
        raise RuntimeError(f"deleting {obj['kind']} {obj['metadata']['name']}: HTTP {code}: {body}")
    return code != 404


def crds_established(api: RestClient, names: Iterable[str]) -> bool:
    """Whether every CRD of ``names`` is Established (its API is served)."""
    for n in names:
        code, body = api.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}"
        )
        conds = (body or {}).get("status", {}).get("conditions") or [] if code == 200 else []
        if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
            return False
    return True


def apply_crds(api: RestClient, crds: Sequence[Mapping[str, Any]], timeout: float = 30) -> None:
    """Apply CRDs and wait until the API server serves them."""
    for crd in crds:
        apply(api, crd)
    names = [str(c["metadata"]["name"]) for c in crds]
    deadline = time.monotonic() + timeout
    while not crds_established(api, names):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for CRDs {names}")
        time.sleep(0.2)


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# ---------------------------------------------------------------------------------------------
# Kueue

KUEUE_NAMESPACE = "kueue-system"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# The webhooks this cluster registers: Kueue's own objects and batch/v1 Jobs (the only
# integration turned on). Kueue's manifests also list pods, Deployments, JobSets, Ray...
KUEUE_WEBHOOK_GROUPS = ("kueue.x-k8s.io", "batch")


def kueue_config(
    *,
    webhook_port: int,
    health_port: int,
    metrics_port: int,
    visibility_port: int,
    cert_dir: Path,
) -> Obj:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for a manager on loopback.

    Leader election off, certificates ours (no internal rotation: it would issue them for a
    Service name the API server cannot reach here), only the batch/v1 Job integration, and
    Jobs without a queue label left alone.
    """
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"{LOOPBACK}:{health_port}"},
        "metrics": {"bindAddress": f"{LOOPBACK}:{metrics_port}"},
        "webhook": {"host": LOOPBACK, "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "visibilityServer": {"bindAddress": LOOPBACK, "bindPort": visibility_port},
        "clientConnection": {"qps": 50, "burst": 100},
        "integrations": {"frameworks": ["batch/job"]},
    }


def _ca_bundle(ca_crt: Path) -> str:
    return base64.b64encode(ca_crt.read_bytes()).decode()


def kueue_crds(crd_dir: Path, *, webhook_base: str, ca_crt: Path) -> list[Obj]:
    """Kueue's CRDs as its kustomization builds them, conversion webhooks called by URL.

    ``crd_dir`` is the module's ``config/components/crd``: ``bases/`` has the CRDs, and the
    ``webhook_in_*`` patches its kustomization lists name the CRDs whose v1beta1 and v1beta2
    are converted by the manager (``/convert``). Kueue points them at a Service; there is none
    here, so they get ``webhook_base`` (``https://127.0.0.1:<port>``) and our CA instead.
    """
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    crds = {}
    for rel in kustomization["resources"]:
        crd = yaml.safe_load((crd_dir / rel).read_text())
        crds[crd["metadata"]["name"]] = crd
    for patch in kustomization.get("patches") or []:
        rel = patch.get("path", "") if isinstance(patch, dict) else ""
        if not Path(rel).name.startswith("webhook_in_"):
            continue
        p = yaml.safe_load((crd_dir / rel).read_text())
        conversion = copy.deepcopy(p["spec"]["conversion"])
        service = conversion["webhook"]["clientConfig"].pop("service")
        conversion["webhook"]["clientConfig"] = {
            "url": webhook_base + service.get("path", "/convert"),
            "caBundle": _ca_bundle(ca_crt),
        }
        crds[p["metadata"]["name"]]["spec"]["conversion"] = conversion
    return list(crds.values())


def kueue_webhooks(manifests: Path, *, webhook_base: str, ca_crt: Path) -> list[Obj]:
    """Kueue's Mutating/ValidatingWebhookConfigurations, called by URL on loopback.

    Taken from the module's ``config/components/webhook/manifests.yaml`` (paths, rules,
    failurePolicy ``Fail``, sideEffects as Kueue ships them), keeping the webhooks of
    :data:`KUEUE_WEBHOOK_GROUPS`. One deliberate difference: the Job webhooks only see Jobs
    labelled ``kueue.x-k8s.io/queue-name``. With ``manageJobsWithoutQueueName: false`` Kueue
    leaves other Jobs alone anyway, and this way a Kueue that is down or restarting (the
    webhooks fail closed) cannot refuse every Job of the cluster.
    """
    out = []
    for doc in load_docs(manifests):
        hooks = []
        for hook in doc.get("webhooks") or []:
            groups = {g for r in hook.get("rules") or [] for g in r.get("apiGroups") or []}
            if not groups or not groups <= set(KUEUE_WEBHOOK_GROUPS):
                continue
            hook = copy.deepcopy(hook)
            service = hook["clientConfig"]["service"]
            hook["clientConfig"] = {
                "url": webhook_base + service["path"],
                "caBundle": _ca_bundle(ca_crt),
            }
            if groups == {"batch"}:
                hook["objectSelector"] = {
                    "matchExpressions": [{"key": KUEUE_QUEUE_LABEL, "operator": "Exists"}]
                }
            hooks.append(hook)
        name = "kueue-" + str(doc["metadata"]["name"])
        out.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": doc["kind"],
                "metadata": {"name": name},
                "webhooks": hooks,
            }
        )
    return out


HOSTNAME_LABEL = "kubernetes.io/hostname"


def topology(name: str, levels: Sequence[str]) -> Obj:
    """A Kueue Topology: node label ``levels`` from the widest to the narrowest, then the host.

    A ResourceFlavor that names it (``topologyName``) makes Kueue place the pods of the Jobs it
    admits by these levels (topology-aware scheduling): a Job whose pod template asks for one
    level (``kueue.x-k8s.io/podset-required-topology``) gets all its pods in one domain of it.
    The hostname level, last, lets Kueue choose the node of each pod.
    """
    return {
        "apiVersion": KUEUE_API,
        "kind": "Topology",
        "metadata": {"name": name},
        "spec": {"levels": [{"nodeLabel": k} for k in [*levels, HOSTNAME_LABEL]]},
    }


def kueue_queues(
    namespace: str,
    *,
    local_queue: str = "gpu",
    cluster_queue: str | None = None,
    flavor: str = "gpu",
    node_labels: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    quota: Mapping[str, str | int] | None = None,
    preemption: Mapping[str, Any] | None = None,
    topology_name: str | None = None,
) -> list[Obj]:
    """A ResourceFlavor, a ClusterQueue with ``quota`` and a LocalQueue in ``namespace``.

    The ClusterQueue (default name ``<namespace>-<local_queue>``) admits only workloads of
    ``namespace``. ``node_labels`` and ``tolerations`` are what Kueue adds to an admitted Job's
    pods (typically a pool of ``e2e/nodes.yaml``: its ``node_selector`` and ``tolerations``).
    ``topology_name`` names a Topology (``topology``): the flavor's pods are then placed by it.
    """
    cq = cluster_queue or f"{namespace}-{local_queue}"
    quota = dict(quota or {"nvidia.com/gpu": 8})
    flavor_spec: Obj = {}
    if node_labels:
        flavor_spec["nodeLabels"] = dict(node_labels)
    if tolerations:
        flavor_spec["tolerations"] = [dict(t) for t in tolerations]
    if topology_name:
        flavor_spec["topologyName"] = topology_name
    cq_spec: Obj = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": [
            {
                "coveredResources": sorted(quota),
                "flavors": [
                    {
                        "name": flavor,
                        "resources": [
                            {"name": r, "nominalQuota": str(quota[r])} for r in sorted(quota)
                        ],
                    }
                ],
            }
        ],
    }
    if preemption:
        cq_spec["preemption"] = dict(preemption)
    return [
        {
            "apiVersion": KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor},
            "spec": flavor_spec,
        },
        {
            "apiVersion": KUEUE_API,
            "kind": "ClusterQueue",
            "metadata": {"name": cq},
            "spec": cq_spec,
        },
        {
            "apiVersion": KUEUE_API,
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cq},
        },
    ]


def workload_priority_class(name: str, value: int, description: str = "") -> Obj:
    """A WorkloadPriorityClass; a Job picks it with the label ``kueue.x-k8s.io/priority-class``."""
    return {
        "apiVersion": KUEUE_API,
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": name},
        "value": value,
        "description": description,
    }


# ---------------------------------------------------------------------------------------------
# Karpenter

KARPENTER_DIR = E2E / "karpenter"
NODEPOOLS_FILE = KARPENTER_DIR / "nodepools.yaml"
INSTANCE_TYPES_FILE = KARPENTER_DIR / "instance-types.json"


def karpenter_crds(crd_dir: Path) -> list[Obj]:
    """NodePool, NodeClaim, NodeOverlay, CapacityBuffer and KWOKNodeClass, from the module."""
    return [d for f in sorted(crd_dir.glob("*.yaml")) for d in load_docs(f)]


def instance_types(path: Path = INSTANCE_TYPES_FILE) -> dict[str, Obj]:
    """The instance types Karpenter's KWOK provider offers, by name."""
    return {str(t["name"]): t for t in json.loads(path.read_text())}


def nodepools(path: Path = NODEPOOLS_FILE) -> list[Obj]:
    """The NodePools (and their KWOKNodeClass) of ``e2e/karpenter/nodepools.yaml``."""
    return load_docs(path)


# ---------------------------------------------------------------------------------------------
# Local PersistentVolumes

STORAGE_CLASS = "local-storage"


def local_storage_class(name: str = STORAGE_CLASS) -> Obj:
    """A StorageClass for pre-made ``local`` volumes: nothing is provisioned.

    ``WaitForFirstConsumer``: a claim stays Pending until a pod that uses it is scheduled; the
    scheduler then picks a node that can take the pod and one of the volumes pinned to that
    node, and binds the two. With ``Immediate`` the claim would bind to any volume first and the
    pod could then be left with a node that does not fit it.
    """
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }


def local_pv(
    name: str,
    path: str,
    node: str,
    *,
    size: str = "1Gi",
    storage_class: str = STORAGE_CLASS,
    access_modes: Sequence[str] = ("ReadWriteOnce",),
) -> Obj:
    """A ``local`` PersistentVolume for the host directory ``path``, usable on ``node`` only.

    ``Retain``: deleting the claim leaves the volume Released (and the directory as it is);
    delete the volume too to use the directory again.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"k8s-step-operator.io/local-pv": "true"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(access_modes),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "volumeMode": "Filesystem",
            "local": {"path": path},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def create_local_pv(
    api: RestClient,
    name: str,
    path: str,
    node: str,
    *,
    size: str = "1Gi",
    storage_class: str = STORAGE_CLASS,
    create_dir: bool = True,
) -> Obj:
    """Apply :func:`local_pv` (and the StorageClass); make the directory unless told not to.

    The node's ``kubernetes.io/hostname`` label is what the volume is pinned to; on this
    cluster it is the node's name. A new directory is world-writable with the sticky bit (like
    /tmp), so that a pod's non-root user can write into it.
    """
    code, node_obj = api.request("GET", f"/api/v1/nodes/{node}")
    if code != 200:
        raise RuntimeError(f"node {node}: HTTP {code}: {node_obj}")
    hostname = node_obj["metadata"].get("labels", {}).get("kubernetes.io/hostname", node)
    if create_dir:
        d = Path(path)
        if not d.exists():
            d.mkdir(parents=True)
            d.chmod(0o1777)
    apply(api, local_storage_class(storage_class))
    return apply(api, local_pv(name, path, hostname, size=size, storage_class=storage_class))
