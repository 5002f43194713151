#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, with simulated GPU nodes, for tests and demos.

Why this exists: the machine that runs the test suite has no container engine and no access to
download sites, so kind, envtest's downloader and kwokctl's downloads cannot work. The control
plane binaries are built from Go modules (``e2e/build/build.sh``) and this script drives them
directly: etcd, kube-apiserver (with RBAC and the usual admission plugins), the controller
manager (Job, garbage collector, TTL, service accounts, namespaces, quota, node lifecycle), the
scheduler, and KWOK, which plays the kubelet for every node annotated ``kwok.x-k8s.io/node=fake``.

Every process binds to 127.0.0.1 on ports picked free at the first ``up`` and kept in the state
directory (``<repo>/.cluster``), so the admin kubeconfig stays valid across restarts.

Usage::

    python e2e/cluster.py up | down | status
    python e2e/cluster.py stop|start|restart COMPONENT
    python e2e/cluster.py add-nodes FILE.yaml

This file is also imported by ``tests/conftest.py`` (``LocalCluster``) so that tests can stop and
restart components and add nodes at runtime.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import clusteraddons as addons
import clusterkit as kit
from clusterkit import LOOPBACK, RestClient, port_is_free, wait_for

REPO = Path(__file__).resolve().parent.parent
E2E = REPO / "e2e"
STATE_DIR = Path(os.environ.get("K8SSO_CLUSTER_DIR", str(REPO / ".cluster")))
NODES_FILE = E2E / "nodes.yaml"
KWOK_DIR = E2E / "kwok"

CORE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Started when their binaries are built (`make binaries`); the cluster runs without them.
ADDONS = ("kueue", "karpenter")
ALL_COMPONENTS = CORE_COMPONENTS + ADDONS
# The address range Services get. Only the real node's kube-proxy gives these addresses a
# meaning (inside the pod network, see e2e/realnode/network.py); on the host they are an
# unreachable route while it runs.
SERVICE_CIDR = "10.96.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Pod IPs KWOK writes into pod status. Kept inside loopback so that nothing that reads a pod IP
# can send traffic off the machine.
POD_CIDR = "127.64.0.0/16"
# The real node's pod network: a bridge that exists only on this machine (e2e/realnode/network.py).
# Its gateway is where pods reach the API server (the `kubernetes` Service's endpoint).
CLUSTER_POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
GATEWAY_IP = "10.244.0.1"
CLUSTER_NAME = "k8sso-local"
# Kubelet identity reserved for a real node that runs containers.
REAL_NODE_NAME = "real-node-0"
# Controllers the project relies on; everything else stays off to save CPU on small machines.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "root-ca-certificate-publisher-controller",
    "pod-garbage-collector-controller",
    "resourcequota-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "disruption-controller",
    # The built-in admin/edit/view ClusterRoles are empty until this one aggregates them.
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    # Services with a selector get their EndpointSlices (with pod hostnames for headless ones:
    # CoreDNS answers <hostname>.<service>.<namespace>.svc from them).
    "endpointslice-controller",
    # PersistentVolumeClaims bind (and grow) only with these; the protection controllers keep
    # a volume or claim in use from being deleted under a pod.
    "persistentvolume-binder-controller",
    "persistentvolume-expander-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
)
STOP_GRACE_S = 10.0
# kube-apiserver stops listening at once on SIGTERM but then lingers for about ten seconds;
# every client backs off longer the longer it is gone, so do not wait for it: SIGKILL it, then
# wait until it is really gone (kit.terminate) before the new one binds its port.
STOP_GRACE_OVERRIDES = {"kube-apiserver": 3.0}


log = kit.logger("cluster")


# ---------------------------------------------------------------------------------------------
# Binaries


def _versions() -> dict[str, str]:
    return kit.versions()


def binaries() -> dict[str, Path]:
    """Where build.sh caches each binary (``$K8SSO_CACHE/bin/<name>-<version>/``)."""
    v = _versions()
    b = kit.cache_dir() / "bin"
    k8s = b / f"kubernetes-{v['KUBERNETES_VERSION']}"
    return {
        "etcd": b / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        "kube-apiserver": k8s / "kube-apiserver",
        "kube-controller-manager": k8s / "kube-controller-manager",
        "kube-scheduler": k8s / "kube-scheduler",
        "kubectl": k8s / "kubectl",
        "kwok": b / f"kwok-{v['KWOK_VERSION']}" / "kwok",
        "kueue": b / f"kueue-{v['KUEUE_VERSION']}" / "kueue",
        "karpenter": b / f"karpenter-{v['KARPENTER_VERSION']}" / "karpenter-kwok",
    }


def available_addons() -> tuple[str, ...]:
    """The add-ons whose binaries are built."""
    b = binaries()
    return tuple(a for a in ADDONS if b[a].exists())


# What this cluster runs: the control plane, KWOK, and the add-ons that are built.
COMPONENTS = CORE_COMPONENTS + available_addons()


# ---------------------------------------------------------------------------------------------
# Certificates


def make_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates once; later runs keep them."""
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca = kit.CertAuthority(pki)
    ca.create("k8sso-local-ca")
    issue_apiserver_cert(ca, pki)
    ca.issue(pki, "admin", "k8sso-admin", "system:masters", client=True)
    ca.issue(pki, "controller-manager", "system:kube-controller-manager", client=True)
    ca.issue(pki, "scheduler", "system:kube-scheduler", client=True)
    # KWOK patches the status of many nodes and pods; the Node authorizer only lets a kubelet
    # touch its own node, so KWOK runs with cluster-admin rights.
    ca.issue(pki, "kwok", "kwok-controller", "system:masters", client=True)
    ca.issue(pki, "kwok-serving", "kwok", server=True, dns=["localhost"], ips=[LOOPBACK])
    ca.issue(
        pki,
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        "system:masters",
        client=True,
    )
    ca.issue(
        pki,
        "kubelet",
        f"system:node:{REAL_NODE_NAME}",
        "system:nodes",
        client=True,
        server=True,
        dns=["localhost", REAL_NODE_NAME],
        ips=[LOOPBACK],
    )
    kit.make_rsa_key_pair(pki / "sa.key", pki / "sa.pub")
    (pki / "done").write_text("ok\n")


def _apiserver_ips() -> list[str]:
    first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
    return [LOOPBACK, first_service_ip, GATEWAY_IP]


def issue_apiserver_cert(ca: kit.CertAuthority, pki: Path) -> None:
    """The API server's serving certificate: loopback, the `kubernetes` Service, the gateway."""
    ca.issue(
        pki,
        "apiserver",
        "kube-apiserver",
        server=True,
        dns=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ],
        ips=_apiserver_ips(),
    )


def apiserver_cert_current(pki: Path) -> bool:
    """Whether the serving certificate names every address pods or clients may use."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    return set(_apiserver_ips()) <= have


def make_addon_pki(pki: Path) -> None:
    """Certificates of the add-ons, each issued once (also for a cluster made before them).

    Kueue and Karpenter act on objects of every namespace (Workloads, Jobs, Nodes, NodeClaims,
    pods' events); like KWOK they run as system:masters here rather than with their charts'
    ClusterRoles. Kueue's webhooks, metrics and visibility server serve one certificate for
    127.0.0.1, which the API server trusts through our CA.
    """
    ca = kit.CertAuthority(pki)
    # A cluster made before the pod network: its serving certificate lacks the gateway. The API
    # server reloads a changed certificate file by itself.
    if not apiserver_cert_current(pki):
        issue_apiserver_cert(ca, pki)
    if not (pki / "kueue.crt").exists():
        ca.issue(pki, "kueue", "kueue-controller-manager", "system:masters", client=True)
    if not (pki / "kueue-serving.crt").exists():
        ca.issue(
            pki, "kueue-serving", "kueue-webhook", server=True, dns=["localhost"], ips=[LOOPBACK]
        )
    if not (pki / "karpenter.crt").exists():
        ca.issue(pki, "karpenter", "karpenter", "system:masters", client=True)


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    kit.write_kubeconfig(
        path,
        server=server,
        ca=pki / "ca.crt",
        cert=pki / f"{user}.crt",
        key=pki / f"{user}.key",
        user=user,
        cluster_name=CLUSTER_NAME,
    )


# ---------------------------------------------------------------------------------------------
# State


PORT_NAMES = (
    "etcd-client",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kueue-webhook",
    "kueue-health",
    "kueue-metrics",
    "kueue-visibility",
    "karpenter-health",
    "karpenter-metrics",
    # The stack services (e2e/stack.py); pods reach them through the real node's gateway.
    "seaweedfs-s3",
    "zenml-server",
)
# The port that tells whether a component's address is taken by someone else.
MAIN_PORT = {"etcd": "etcd-client", "kueue": "kueue-webhook", "karpenter": "karpenter-health"}


@dataclass
class State:
    """Paths and ports of one local cluster; ports persist in ``state.json``."""

    root: Path
    ports: dict[str, int]

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['kube-apiserver']}"

    def pidfile(self, component: str) -> Path:
        return self.root / "run" / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    @classmethod
    def load(cls, root: Path = STATE_DIR, *, create: bool = False) -> State:
        f = root / "state.json"
        ports: dict[str, int] = {}
        if f.exists():
            ports = {k: int(v) for k, v in json.loads(f.read_text())["ports"].items()}
        elif not create:
            raise SystemExit(f"no local cluster state in {root}; run `make cluster` first")
        ports = kit.free_ports(PORT_NAMES, ports)
        st = cls(root=root, ports=ports)
        if create:
            for d in ("run", "logs", "kwok", "etcd", "kueue", "karpenter"):
                (root / d).mkdir(parents=True, exist_ok=True)
            (root / "etcd").chmod(0o700)
            f.write_text(json.dumps({"ports": ports}, indent=2) + "\n")
        return st


# ---------------------------------------------------------------------------------------------
# Processes


def running_pid(st: State, component: str) -> int | None:
    """The pid of ``component`` if it runs the binary we started (guards against pid reuse)."""
    pid = kit.read_pidfile(st.pidfile(component))
    if pid is None or not kit.proc_alive(pid):
        return None
    cmd = kit.proc_cmdline(pid)
    if cmd[:1] == ["setsid"]:  # the instant before the launcher execs the binary
        cmd = cmd[1:]
    if not cmd or Path(cmd[0]).name != Path(binaries()[component]).name:
        return None
    return pid


def argv_for(st: State, component: str) -> list[str]:
    b = binaries()
    p = st.ports
    pki = st.pki
    root = st.root
    if component == "etcd":
        peer = f"http://{LOOPBACK}:{p['etcd-peer']}"
        client = f"http://{LOOPBACK}:{p['etcd-client']}"
        return [
            str(b["etcd"]),
            "--name=default",
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        return [
            str(b["kube-apiserver"]),
            f"--etcd-servers=http://{LOOPBACK}:{p['etcd-client']}",
            f"--bind-address={LOOPBACK}",
            # Where pods reach it: the real node's pod network gateway, which forwards to the
            # loopback port (e2e/realnode/gateway.py).
            f"--advertise-address={GATEWAY_IP}",
            f"--secure-port={p['kube-apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
            "PodSecurity,Priority,DefaultTolerationSeconds,TaintNodesByCondition,"
            "NodeRestriction,RuntimeClass,DefaultStorageClass,MutatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # KWOK nodes report their name as Hostname; resolving it would go to DNS.
            "--kubelet-preferred-address-types=InternalIP",
            # The `kubernetes` Service's EndpointSlice names the gateway; the real node publishes
            # it while the gateway exists (and removes it with the node), so that nothing is
            # ever pointed at an address with nothing behind it.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
            "--v=1",
        ]
    if component == "kube-controller-manager":
        kc = root / "controller-manager.kubeconfig"
        return [
            str(b["kube-controller-manager"]),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={p['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--cluster-name={CLUSTER_NAME}",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kube-scheduler":
        kc = root / "scheduler.kubeconfig"
        return [
            str(b["kube-scheduler"]),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={p['kube-scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
    if component == "kwok":
        configs = [*sorted(KWOK_DIR.glob("*.yaml")), root / "kwok" / "logs.yaml"]
        return [
            str(b["kwok"]),
            f"--kubeconfig={root / 'kwok.kubeconfig'}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--node-ip={LOOPBACK}",
            f"--node-port={p['kwok']}",
            f"--server-address={LOOPBACK}:{p['kwok']}",
            f"--tls-cert-file={pki / 'kwok-serving.crt'}",
            f"--tls-private-key-file={pki / 'kwok-serving.key'}",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
            # Per-pod log files come from Logs objects in the API (see LocalCluster.write_pod_log);
            # the default for every other pod comes from the ClusterLogs in logs.yaml.
            "--enable-crds=Logs",
            *(f"--config={c}" for c in configs),
        ]
    if component == "kueue":
        return [
            str(b["kueue"]),
            f"--config={kueue_config(st)[0]}",
            f"--kubeconfig={root / 'kueue.kubeconfig'}",
            f"--visibility-server-port={p['kueue-visibility']}",
        ]
    if component == "karpenter":
        return [
            str(b["karpenter"]),
            "--disable-leader-election=true",
            f"--metrics-port={p['karpenter-metrics']}",
            f"--health-probe-port={p['karpenter-health']}",
            f"--instance-types-file-path={karpenter_instance_types(st)[0]}",
            # Decide within about a second of a pod going Pending (default: 1 s idle, 10 s max).
            "--batch-idle-duration=500ms",
            "--batch-max-duration=3s",
            "--kube-client-qps=50",
            "--kube-client-burst=100",
            "--log-level=info",
        ]
    raise SystemExit(f"unknown component {component!r}; accepted: {', '.join(ALL_COMPONENTS)}")


def component_env(st: State, component: str) -> dict[str, str]:
    """Environment variables a component needs besides its flags."""
    if component == "kueue":
        # Read by the two lines e2e/build/build.sh adds to Kueue (see there).
        certs = str(st.root / "kueue" / "certs")
        return {"KUEUE_METRICS_CERT_DIR": certs, "KUEUE_VISIBILITY_CERT_DIR": certs}
    if component == "karpenter":
        # Karpenter parses its own flags only; controller-runtime finds the kubeconfig here.
        return {"KUBECONFIG": str(st.root / "karpenter.kubeconfig")}
    return {}


def _content_named(directory: Path, stem: str, suffix: str, text: str) -> tuple[Path, str]:
    # The file name carries a digest of the content, so a changed file changes the command
    # line and `up` restarts the component (which reads the file only at start).
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return directory / f"{stem}-{digest}{suffix}", text


def kueue_config(st: State) -> tuple[Path, str]:
    """Where Kueue's Configuration goes in the state directory, and its text."""
    p = st.ports
    cfg = addons.kueue_config(
        webhook_port=p["kueue-webhook"],
        health_port=p["kueue-health"],
        metrics_port=p["kueue-metrics"],
        visibility_port=p["kueue-visibility"],
        cert_dir=st.root / "kueue" / "certs",
    )
    return _content_named(st.root / "kueue", "config", ".yaml", yaml.safe_dump(cfg))


def karpenter_instance_types(st: State) -> tuple[Path, str]:
    """A copy of ``e2e/karpenter/instance-types.json`` in the state directory, and its text."""
    text = addons.INSTANCE_TYPES_FILE.read_text()
    return _content_named(st.root / "karpenter", "instance-types", ".json", text)


def start_process(st: State, component: str) -> int:
    pid = running_pid(st, component)
    if pid is not None:
        return pid
    argv = argv_for(st, component)
    if not Path(argv[0]).exists():
        raise SystemExit(f"{argv[0]} is missing; run `make binaries` (bash e2e/build/build.sh)")
    pid = kit.spawn(
        argv,
        logfile=st.logfile(component),
        pidfile=st.pidfile(component),
        cwd=st.root,
        env=component_env(st, component),
    )
    log(f"started {component} (pid {pid})")
    return pid


def stop_process(st: State, component: str, grace: float | None = None) -> bool:
    """TERM, then KILL after ``grace`` seconds. Returns True if something was stopped."""
    if grace is None:
        grace = STOP_GRACE_OVERRIDES.get(component, STOP_GRACE_S)
    pid = running_pid(st, component)
    if pid is None:
        st.pidfile(component).unlink(missing_ok=True)
        return False
    kit.terminate(pid, grace, name=component, log=log)
    st.pidfile(component).unlink(missing_ok=True)
    log(f"stopped {component} (pid {pid})")
    return True


# ---------------------------------------------------------------------------------------------
# Health and the API


def _ssl_ctx(st: State, *, client: str | None = "admin", verify: bool = True) -> ssl.SSLContext:
    # The controller manager and scheduler serve /healthz with self-signed certificates.
    return kit.tls_context(
        st.pki / "ca.crt" if verify else None,
        st.pki / f"{client}.crt" if client else None,
        st.pki / f"{client}.key" if client else None,
    )


_get = kit.http_get


def healthy(st: State, component: str) -> bool:
    p = st.ports
    if component == "etcd":
        code, _ = _get(f"http://{LOOPBACK}:{p['etcd-client']}/health")
    elif component == "kube-apiserver":
        code, _ = _get(f"{st.server}/readyz", _ssl_ctx(st))
    elif component in ("kube-controller-manager", "kube-scheduler"):
        code, _ = _get(
            f"https://{LOOPBACK}:{p[component]}/healthz", _ssl_ctx(st, client=None, verify=False)
        )
    elif component == "kwok":
        code, _ = _get(f"http://{LOOPBACK}:{p['kwok']}/healthz")
    elif component in ("kueue", "karpenter"):
        # controller-runtime's probes; ready once the caches synced (and, for Kueue, the
        # webhook server listens).
        code, _ = _get(f"http://{LOOPBACK}:{p[component + '-health']}/readyz")
    else:
        raise SystemExit(f"unknown component {component!r}")
    return code == 200


class Api(RestClient):
    """The few REST calls this script needs, over the admin client certificate."""

    def __init__(self, st: State) -> None:
        super().__init__(st.server, _ssl_ctx(st))


# ---------------------------------------------------------------------------------------------
# Simulated nodes


def load_node_file(path: Path = NODES_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise SystemExit(f"{path}: expected a mapping with a `nodes` list")
    return data


def node_manifest(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A Node object from one entry of ``nodes.yaml`` (name, labels, taints, capacity...)."""
    name = spec["name"]
    capacity = {k: str(v) for k, v in spec["capacity"].items()}
    allocatable = {k: str(v) for k, v in (spec.get("allocatable") or capacity).items()}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **{k: str(v) for k, v in (spec.get("labels") or {}).items()},
    }
    annotations = {
        "kwok.x-k8s.io/node": "fake",
        "node.alpha.kubernetes.io/ttl": "0",
        **{k: str(v) for k, v in (spec.get("annotations") or {}).items()},
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": list(spec.get("taints") or [])},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "addresses": [
                {"type": "InternalIP", "address": LOOPBACK},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "simulated",
                "kubeletVersion": _versions()["KUBERNETES_VERSION"],
            },
        },
    }


def ensure_nodes(st: State, specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Create the nodes that do not exist yet; existing nodes are left as they are."""
    api = Api(st)
    names = []
    for spec in specs:
        m = node_manifest(spec)
        name = m["metadata"]["name"]
        names.append(name)
        code, body = api.request("POST", "/api/v1/nodes", m)
        if code == 201:
            log(f"created node {name}")
        elif code != 409:
            raise SystemExit(f"creating node {name} failed: HTTP {code}: {body}")
    return names


def nodes_ready(st: State, names: Sequence[str]) -> bool:
    code, body = Api(st).request("GET", "/api/v1/nodes")
    if code != 200:
        return False
    ready = set()
    for n in body["items"]:
        for c in n.get("status", {}).get("conditions") or []:
            if c["type"] == "Ready" and c["status"] == "True":
                ready.add(n["metadata"]["name"])
        # The not-ready taint set at registration must be gone before pods can land.
        taints = n.get("spec", {}).get("taints") or []
        if any(t["key"].startswith("node.kubernetes.io/") for t in taints):
            ready.discard(n["metadata"]["name"])
    return set(names) <= ready


def ensure_crds(st: State) -> None:
    """Install the CRDs in ``e2e/kwok/crds`` (KWOK watches them) and wait until established."""
    crds = [
        doc
        for f in sorted((KWOK_DIR / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc
    ]
    addons.apply_crds(Api(st), crds)


def write_pod_log(
    st: State,
    namespace: str,
    pod: str,
    lines: Sequence[str],
    *,
    container: str | None = None,
    stream: str = "stdout",
    append: bool = True,
) -> Path:
    """Give one pod on a simulated node its own container log, served by ``pods/log``.

    Lines are written in the CRI log format the kubelet uses, timestamped now; appending to a
    followed log shows up in the open stream. KWOK keeps a followed stream open until the client
    closes it, even after the pod finished (a real kubelet ends it when the container exits).
    """
    d = st.root / "kwok" / "podlogs" / namespace
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{pod}{'.' + container if container else ''}.log"
    with open(f, "a" if append else "w") as out:
        for line in lines:
            ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out.write(f"{ts} {stream} F {line}\n")
    logs: dict[str, Any] = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {
            "logs": [
                {"containers": [container] if container else [], "logsFile": str(f)},
            ]
        },
    }
    api = Api(st)
    path = f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{namespace}/logs"
    code, body = api.request("GET", f"{path}/{pod}")
    if code == 404:
        code, body = api.request("POST", path, logs)
        if code not in (201, 409):
            raise RuntimeError(f"creating Logs {namespace}/{pod} failed: HTTP {code}: {body}")
    elif code == 200:
        have = body["spec"]["logs"]
        if not any(entry.get("logsFile") == str(f) for entry in have):
            body["spec"]["logs"] = [*have, *logs["spec"]["logs"]]
            code, body = api.request("PUT", f"{path}/{pod}", body)
            if code != 200:
                raise RuntimeError(f"updating Logs {namespace}/{pod} failed: HTTP {code}: {body}")
    else:
        raise RuntimeError(f"reading Logs {namespace}/{pod} failed: HTTP {code}: {body}")
    return f


def default_sa_exists(st: State) -> bool:
    code, _ = Api(st).request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    return code == 200


# ---------------------------------------------------------------------------------------------
# Commands


def write_kwok_logs_config(st: State) -> None:
    """Container logs KWOK serves for ``kubectl logs``: one default file for every pod."""
    d = st.root / "kwok"
    d.mkdir(parents=True, exist_ok=True)
    default_log = d / "default-container.log"
    if not default_log.exists():
        ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        default_log.write_text(
            f"{ts} stdout F simulated container started\n"
            f"{ts} stdout F simulated container finished\n"
        )
    cfg = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "default-logs"},
        "spec": {"logs": [{"containers": [], "logsFile": str(default_log), "follow": False}]},
    }
    (d / "logs.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def prepare(st: State) -> None:
    make_pki(st.pki)
    make_addon_pki(st.pki)
    write_kubeconfig(st.kubeconfig, st.server, st.pki, "admin")
    write_kubeconfig(
        st.root / "controller-manager.kubeconfig", st.server, st.pki, "controller-manager"
    )
    write_kubeconfig(st.root / "scheduler.kubeconfig", st.server, st.pki, "scheduler")
    write_kubeconfig(st.root / "kwok.kubeconfig", st.server, st.pki, "kwok")
    write_kubeconfig(st.root / "kueue.kubeconfig", st.server, st.pki, "kueue")
    write_kubeconfig(st.root / "karpenter.kubeconfig", st.server, st.pki, "karpenter")
    write_kwok_logs_config(st)
    # Kueue: its configuration, and the serving certificate under the names controller-runtime
    # and the visibility server look for.
    certs = st.root / "kueue" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    kit.write_private(certs / "tls.key", (st.pki / "kueue-serving.key").read_bytes())
    (certs / "tls.crt").write_bytes((st.pki / "kueue-serving.crt").read_bytes())
    for path, text in (kueue_config(st), karpenter_instance_types(st)):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*"):
                old.unlink()
            kit.write_atomic(path, text)


def outdated(st: State, component: str) -> bool:
    """True when ``component`` runs with other flags than this script would give it now."""
    pid = running_pid(st, component)
    return pid is not None and kit.proc_cmdline(pid) != argv_for(st, component)


def _check_port(st: State, component: str) -> None:
    port = st.ports[MAIN_PORT.get(component, component)]
    # A process stopped a moment ago may take a little longer to let go of its port.
    deadline = time.monotonic() + 5
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not port_is_free(port):
        raise SystemExit(
            f"port {port} for {component} is taken by another process; "
            f"run `python e2e/cluster.py down` and `up` again to pick new ports"
        )


def ensure_component(st: State, component: str, timeout: float) -> bool:
    """Start ``component`` unless it already runs healthy. True if it was (re)started."""
    if outdated(st, component):
        log(f"{component} runs with outdated flags; restarting it")
        stop_process(st, component)
    pid = running_pid(st, component)
    if pid is not None:
        try:
            wait_for(f"{component} health", lambda: healthy(st, component), 3)
            return False
        except SystemExit:
            log(f"{component} (pid {pid}) runs but is not healthy; restarting it")
            stop_process(st, component)
    elif st.pidfile(component).exists():
        log(f"{component} is not running; starting it again")
    _check_port(st, component)
    start_process(st, component)
    wait_for(f"{component} to become healthy", lambda: healthy(st, component), timeout)
    return True


def _addon_dir(component: str) -> Path:
    return binaries()[component].parent


def install_kueue_crds(st: State) -> None:
    """Kueue's CRDs, their v1beta1 <-> v1beta2 conversion served by the manager on loopback."""
    crds = addons.kueue_crds(
        _addon_dir("kueue") / "crd",
        webhook_base=f"https://{LOOPBACK}:{st.ports['kueue-webhook']}",
        ca_crt=st.pki / "ca.crt",
    )
    api = Api(st)
    addons.apply_crds(api, crds)
    addons.apply(api, addons.namespace(addons.KUEUE_NAMESPACE))


def kueue_webhooks(st: State) -> list[dict[str, Any]]:
    return addons.kueue_webhooks(
        _addon_dir("kueue") / "webhook" / "manifests.yaml",
        webhook_base=f"https://{LOOPBACK}:{st.ports['kueue-webhook']}",
        ca_crt=st.pki / "ca.crt",
    )


def register_kueue_webhooks(st: State) -> None:
    """Register the admission webhooks once Kueue serves them (they fail closed)."""
    api = Api(st)
    for cfg in kueue_webhooks(st):
        addons.apply(api, cfg)


def unregister_kueue_webhooks(st: State) -> None:
    """Remove Kueue's admission webhooks from a cluster that runs without Kueue now."""
    api = Api(st)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for name in (
            "kueue-mutating-webhook-configuration",
            "kueue-validating-webhook-configuration",
        ):
            obj = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": name},
            }
            if addons.delete(api, obj):
                log(f"removed {kind} {name}: Kueue is not built")


def install_karpenter_crds(st: State) -> None:
    addons.apply_crds(Api(st), addons.karpenter_crds(_addon_dir("karpenter") / "crds"))


def install_nodepools(st: State) -> None:
    api = Api(st)
    for obj in addons.nodepools():
        addons.apply(api, obj)


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    b = binaries()
    for name in (*CORE_COMPONENTS, "kubectl"):
        if not b[name].exists():
            raise SystemExit(f"{name} binary missing at {b[name]}; run `make binaries`")
    enabled = available_addons()
    for a in ADDONS:
        if a not in enabled:
            log(f"{a} is not built ({b[a]} missing): the cluster runs without it ({ADDON_HINT})")
    st = State.load(create=True)
    prepare(st)
    changed = ensure_component(st, "etcd", 30)
    changed |= ensure_component(st, "kube-apiserver", 90)
    names = ensure_nodes(st, load_node_file()["nodes"])
    ensure_crds(st)
    api = Api(st)
    addons.apply(api, addons.local_storage_class())
    if "kueue" in enabled:
        install_kueue_crds(st)
    else:
        unregister_kueue_webhooks(st)
    if "karpenter" in enabled:
        install_karpenter_crds(st)
    # The rest only needs the API server; start them together, then wait for each.
    rest = ("kube-controller-manager", "kube-scheduler", "kwok", *enabled)
    to_wait = []
    for c in rest:
        if outdated(st, c):
            log(f"{c} runs with outdated flags; restarting it")
            stop_process(st, c)
        if running_pid(st, c) is None or not healthy(st, c):
            if running_pid(st, c) is not None:
                stop_process(st, c)
            _check_port(st, c)
            start_process(st, c)
            to_wait.append(c)
    for c in to_wait:
        timeout = 120 if c in ADDONS else 60
        wait_for(f"{c} to become healthy", functools.partial(healthy, st, c), timeout)
    changed |= bool(to_wait)
    if "kueue" in enabled:
        register_kueue_webhooks(st)
    if "karpenter" in enabled:
        install_nodepools(st)
    wait_for("the default ServiceAccount", lambda: default_sa_exists(st), 60)
    wait_for(f"nodes {', '.join(names)} to be Ready", lambda: nodes_ready(st, names), 60)
    took = time.monotonic() - t0
    if changed:
        log(f"cluster ready in {took:.1f} s")
    else:
        log(f"cluster already running and healthy (checked in {took:.1f} s)")
    extras = ", ".join(enabled) or "no Kueue, no Karpenter: `make binaries` builds them"
    print(
        f"Local cluster is up: API server {st.server} ({extras})\n"
        f"  export KUBECONFIG={st.kubeconfig}\n"
        f"  {b['kubectl']} get nodes -L nvidia.com/gpu.product"
    )
    return 0


ADDON_HINT = "`make binaries` builds it"


def cmd_down(args: argparse.Namespace) -> int:
    if not STATE_DIR.exists():
        log(f"nothing to stop: {STATE_DIR} does not exist")
        return 0
    realnode = E2E / "realnode" / "node.py"
    if (STATE_DIR / "realnode").exists() and realnode.exists():
        # The real node (containerd + kubelet) keeps its state inside ours and uses our
        # certificates: it goes first, through its own teardown (containers, mounts).
        log("stopping the real node first (e2e/realnode/node.py down)")
        r = subprocess.run([sys.executable, str(realnode), "down"], timeout=300, check=False)
        if r.returncode != 0:
            log(f"the real node's teardown exited with {r.returncode}; continuing")
    stack = E2E / "stack.py"
    if (STATE_DIR / "stack").exists() and stack.exists():
        # The object store and the ZenML server (make stack-services) keep their data here too.
        log("stopping the stack services (e2e/stack.py down)")
        r = subprocess.run([sys.executable, str(stack), "down"], timeout=120, check=False)
        if r.returncode != 0:
            log(f"the stack services' teardown exited with {r.returncode}; continuing")
    st = State.load(STATE_DIR, create=False) if (STATE_DIR / "state.json").exists() else None
    left: list[str] = []
    if st is not None:
        # Every component, built or not: a binary removed since `up` leaves its process running.
        for c in reversed(ALL_COMPONENTS):
            stop_process(st, c)
        left = [c for c in ALL_COMPONENTS if running_pid(st, c) is not None]
    # Anything else still running from this state directory was started by us too.
    marker = str(STATE_DIR)
    for pid in kit.all_pids():
        cmd = kit.proc_cmdline(pid)
        if cmd and any(marker in a for a in cmd[1:]) and kit.proc_alive(pid):
            left.append(f"{Path(cmd[0]).name} (pid {pid})")
    if left:
        raise SystemExit(f"still running after down: {', '.join(left)}")
    shutil.rmtree(STATE_DIR)
    log(f"stopped every component and removed {STATE_DIR}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if not (STATE_DIR / "state.json").exists():
        print(f"no local cluster ({STATE_DIR} has no state)")
        return 1
    st = State.load()
    ok = True
    built = available_addons()
    for c in ALL_COMPONENTS:
        pid = running_pid(st, c)
        port = st.ports[MAIN_PORT.get(c, c)]
        if c in ADDONS and c not in built and pid is None:
            print(f"{c:25} {'not built':10} ({ADDON_HINT})")
            continue
        h = pid is not None and healthy(st, c)
        ok &= h
        state = "healthy" if h else ("unhealthy" if pid else "stopped")
        print(f"{c:25} {state:10} pid={pid or '-':<8} {LOOPBACK}:{port}")
    print(f"kubeconfig: {st.kubeconfig}")
    return 0 if ok else 1


def cmd_component(args: argparse.Namespace) -> int:
    st = State.load()
    c = args.component
    if args.cmd in ("stop", "restart"):
        stop_process(st, c)
    if args.cmd in ("start", "restart"):
        restart_component(st, c)
    return 0


# How long a (re)started component may take to report healthy on a loaded machine: the API
# server fills its caches from etcd first.
START_TIMEOUT_S = 180.0


def restart_component(st: State, component: str, timeout: float = START_TIMEOUT_S) -> None:
    """Start ``component`` and wait until it is healthy.

    A process that dies on the way (its port still held by the old one, a bad flag) is started
    again until ``timeout``; the component is never left stopped without saying so.

    Raises:
        SystemExit: It is not healthy within ``timeout``: says why, with its log's last lines.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        if running_pid(st, component) is None:
            attempts += 1
            start_process(st, component)
        left = deadline - time.monotonic()
        with contextlib.suppress(SystemExit):
            wait_for(
                f"{component} to become healthy",
                lambda: healthy(st, component) or running_pid(st, component) is None,
                max(1.0, min(left, 90.0)),
            )
        if running_pid(st, component) is not None and healthy(st, component):
            return
        if time.monotonic() >= deadline:
            tail = "\n".join(kit.tail(st.logfile(component), 15))
            pid = running_pid(st, component)
            what = f"running (pid {pid}) but not healthy" if pid else "not running"
            raise SystemExit(
                f"{component} is {what} {timeout:.0f} s after {attempts} start(s); "
                f"its log ({st.logfile(component)}) ends with:\n{tail}"
            )
        log(f"{component} exited while starting; starting it again")
        time.sleep(1.0)


def cmd_add_nodes(args: argparse.Namespace) -> int:
    st = State.load()
    names = ensure_nodes(st, load_node_file(Path(args.file))["nodes"])
    wait_for("new nodes to be Ready", lambda: nodes_ready(st, names), 60)
    return 0


def pools() -> dict[str, dict[str, Any]]:
    """The pools of ``e2e/nodes.yaml``: static ones and those an autoscaler grows from zero."""
    return dict(load_node_file().get("pools") or {})


def autoscaled_pools() -> dict[str, dict[str, Any]]:
    """The pools Karpenter grows from zero (their ``autoscaler`` entry names the NodePool)."""
    return {name: p for name, p in pools().items() if p.get("autoscaler")}


def pool_nodes(st: State, pool: Mapping[str, Any]) -> list[str]:
    """Names of the Ready nodes a pool's selector matches right now."""
    selector = ",".join(f"{k}={v}" for k, v in pool["node_selector"].items())
    code, body = Api(st).request("GET", f"/api/v1/nodes?labelSelector={selector}")
    if code != 200:
        raise SystemExit(f"listing nodes failed: HTTP {code}: {body}")
    return sorted(
        n["metadata"]["name"]
        for n in body["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions") or []
        )
    )


def cmd_pools(args: argparse.Namespace) -> int:
    st = State.load()
    out = {name: {**p, "nodes": pool_nodes(st, p)} for name, p in pools().items()}
    print(json.dumps(out, indent=2))
    return 0


def create_local_pv(
    st: State,
    name: str,
    path: str,
    node: str,
    *,
    size: str = "1Gi",
    storage_class: str = addons.STORAGE_CLASS,
    create_dir: bool = True,
) -> dict[str, Any]:
    """A ``local`` PersistentVolume at the host directory ``path``, pinned to ``node``."""
    return addons.create_local_pv(
        Api(st), name, path, node, size=size, storage_class=storage_class, create_dir=create_dir
    )


def cmd_local_pv(args: argparse.Namespace) -> int:
    st = State.load()
    path = str(Path(args.path).resolve())
    pv = create_local_pv(
        st,
        args.name,
        path,
        args.node,
        size=args.size,
        storage_class=args.storage_class,
        create_dir=not args.no_mkdir,
    )
    print(
        f"PersistentVolume {pv['metadata']['name']}: {path} on node {args.node}, {args.size}, "
        f"StorageClass {args.storage_class} (claims bind when a pod using them is scheduled)"
    )
    return 0


def kueue_queues(
    namespace: str,
    *,
    pool: str = "h100",
    local_queue: str = "gpu",
    cluster_queue: str | None = None,
    quota: Mapping[str, str | int] | None = None,
    preemption: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A ResourceFlavor for a pool of ``e2e/nodes.yaml``, a ClusterQueue and a LocalQueue.

    The flavor is named after the pool and carries its node selector and tolerations, which
    Kueue adds to the pods of the Jobs it admits. Quota defaults to one node's worth of the
    pool's resource.
    """
    d = pools()[pool]
    return addons.kueue_queues(
        namespace,
        local_queue=local_queue,
        cluster_queue=cluster_queue,
        flavor=pool,
        node_labels=d["node_selector"],
        tolerations=d.get("tolerations") or [],
        quota=quota or {d["resource"]: int(d["per_node"])},
        preemption=preemption,
    )


def kueue_pending_workloads(
    st: State,
    *,
    cluster_queue: str | None = None,
    namespace: str | None = None,
    local_queue: str | None = None,
) -> dict[str, Any]:
    """Kueue's visibility API: the pending Workloads of a queue, in admission order.

    In a production cluster the API server serves it through an APIService backed by Kueue's
    Service. Here there is no Service to route to, so this asks Kueue's visibility server on
    its loopback port directly (with the admin certificate; it authenticates and authorizes
    through the API server). Give ``cluster_queue``, or ``namespace`` and ``local_queue``.
    """
    base = (
        f"https://{LOOPBACK}:{st.ports['kueue-visibility']}/apis/visibility.kueue.x-k8s.io/v1beta2"
    )
    if cluster_queue:
        path = f"/clusterqueues/{cluster_queue}/pendingworkloads"
    elif namespace and local_queue:
        path = f"/namespaces/{namespace}/localqueues/{local_queue}/pendingworkloads"
    else:
        raise ValueError("give cluster_queue, or namespace and local_queue")
    # Kueue's visibility server signs its own certificate only when none is given; it serves
    # ours (kueue-serving, for 127.0.0.1), so the cluster's CA verifies it.
    code, body = RestClient(base, _ssl_ctx(st)).request("GET", path)
    if code != 200:
        raise RuntimeError(f"GET {path} on Kueue's visibility server: HTTP {code}: {body}")
    result: dict[str, Any] = body
    return result


def cmd_kueue_queues(args: argparse.Namespace) -> int:
    st = State.load()
    quota = dict(q.split("=", 1) for q in args.quota) if args.quota else None
    api = Api(st)
    for obj in kueue_queues(
        args.namespace,
        pool=args.pool,
        local_queue=args.queue,
        cluster_queue=args.cluster_queue,
        quota=quota,
    ):
        addons.apply(api, obj)
        m = obj["metadata"]
        print(
            f"{obj['kind']} {m.get('namespace', '') + '/' if m.get('namespace') else ''}{m['name']}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the cluster (idempotent)").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop every process and remove the state").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="show the processes and their health").set_defaults(fn=cmd_status)
    for c in ("stop", "start", "restart"):
        p = sub.add_parser(c, help=f"{c} one component")
        p.add_argument("component", choices=COMPONENTS)
        p.set_defaults(fn=cmd_component)
    p = sub.add_parser("add-nodes", help="create the simulated nodes listed in a YAML file")
    p.add_argument("file")
    p.set_defaults(fn=cmd_add_nodes)
    p = sub.add_parser("pools", help="print the pools of e2e/nodes.yaml with their Ready nodes")
    p.set_defaults(fn=cmd_pools)
    p = sub.add_parser("local-pv", help="create a local PersistentVolume pinned to one node")
    p.add_argument("name")
    p.add_argument("path", help="host directory (created, mode 1777, unless --no-mkdir)")
    p.add_argument("--node", default=REAL_NODE_NAME)
    p.add_argument("--size", default="1Gi")
    p.add_argument("--storage-class", default=addons.STORAGE_CLASS)
    p.add_argument("--no-mkdir", action="store_true")
    p.set_defaults(fn=cmd_local_pv)
    p = sub.add_parser(
        "kueue-queues", help="create a ResourceFlavor, ClusterQueue and LocalQueue for a pool"
    )
    p.add_argument("namespace")
    p.add_argument("--pool", default="h100", help="a pool of e2e/nodes.yaml (default: h100)")
    p.add_argument("--queue", default="gpu", help="the LocalQueue's name (default: gpu)")
    p.add_argument("--cluster-queue", help="default: <namespace>-<queue>")
    p.add_argument(
        "--quota", action="append", metavar="RESOURCE=N", help="default: one node of the pool"
    )
    p.set_defaults(fn=cmd_kueue_queues)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
