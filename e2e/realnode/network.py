"""The real node's pod network: a bridge, kube-proxy, CoreDNS and a gateway to the host's services.

Why this exists: pods on the real node must reach the API server through in-cluster
configuration (the ``kubernetes`` Service), each other, and Services by DNS name, as they do in
any cluster, while no packet of the cluster ever leaves the machine.

The address plan, and why it keeps every packet on the machine:

* Pods get addresses from ``10.244.0.0/24`` on the bridge ``k8sso0``, which this module creates
  and which holds nothing but the pods' veth ends; the host's side of it is the gateway
  ``10.244.0.1``. Kubernetes refuses loopback addresses in EndpointSlices (``ValidateEndpointIP``),
  so pods that back Services need addresses outside ``127.0.0.0/8``; this private block exists
  only on that bridge.
* Pods have two routes, both on the bridge: their ``/24`` and the Service range
  ``10.96.0.0/16`` through the gateway. No default route: a connect to any other address fails
  at once (``ENETUNREACH``) inside the pod.
* On the host, ``10.244.0.0/16`` and ``10.96.0.0/16`` are ``unreachable`` routes (the bridge's
  ``/24`` is more specific), so nothing on the host sends a packet for either range toward the
  default route; only the bridge may forward (``net.ipv4.conf.k8sso0.forwarding``), and a mangle
  rule drops whatever would be forwarded from it to any other interface. A filter rule lets pods
  reach only the gateway's published ports on the host.
* kube-proxy (iptables mode, from the same Kubernetes build) turns Service addresses into
  endpoints. Services whose backends are host processes (the API server, the object store, the
  ZenML server) have EndpointSlices on the gateway address; the host processes themselves listen
  on 127.0.0.1 only, and ``gateway.py`` forwards the gateway's port to the same loopback port.
  CoreDNS listens on 127.0.0.1 and on the gateway.

Why the API server is reached through a forwarder: it binds one address, and every kubeconfig
(and every cluster without a real node) uses 127.0.0.1; binding every interface would expose it
on the machine's network; a DNAT to 127.0.0.1 (with ``route_localnet``) cannot follow
kube-proxy's own DNAT of the Service address in the same chain. A user-space forwarder on the
gateway keeps the API server on loopback, needs no sysctl that weakens loopback, and does not
care when the API server restarts. The ``kubernetes`` Service's EndpointSlice is published here
(the API server runs with ``--endpoint-reconciler-type=none``), so that it names the gateway
only while the gateway exists.

Everything this module adds is removed by :func:`down`: processes, API objects it owns, iptables
rules and chains (kube-proxy's through ``kube-proxy --cleanup``, and the kubelet's canaries),
routes, the bridge and any sysctl it changed (recorded in ``network.json``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
E2E = HERE.parent
sys.path.insert(0, str(E2E))

import cluster  # noqa: E402
import clusteraddons as addons  # noqa: E402
import clusterkit as kit  # noqa: E402
from clusterkit import LOOPBACK, wait_for  # noqa: E402

log = kit.logger("podnet")

BRIDGE = "k8sso0"
# A fixed, locally administered address: a bridge otherwise takes the lowest MAC of its ports,
# which changes as pods come and go.
BRIDGE_MAC = "02:6b:38:73:6f:30"
CLUSTER_CIDR = ipaddress.ip_network(cluster.CLUSTER_POD_CIDR)
NODE_CIDR = ipaddress.ip_network(cluster.NODE_POD_CIDR)
GATEWAY = cluster.GATEWAY_IP
SERVICE_CIDR = ipaddress.ip_network(cluster.SERVICE_CIDR)
DNS_SERVICE_IP = cluster.DNS_SERVICE_IP
CLUSTER_DOMAIN = cluster.CLUSTER_DOMAIN
# Where the Services of host processes live (besides `kubernetes` in `default` and `kube-dns` in
# `kube-system`, where every cluster has them).
SERVICES_NAMESPACE = "k8sso-system"
MANAGED_BY = "realnode.k8s-step-operator.io"

ROOT = cluster.STATE_DIR / "realnode"
NET = ROOT / "network"
STATE_FILE = NET / "network.json"
RUN = ROOT / "run"
LOGS = ROOT / "logs"

FILTER_CHAIN = "K8SSO-POD-INPUT"
MANGLE_CHAIN = "K8SSO-POD-FORWARD"
EGRESS_CHAIN = "K8SSO-POD-EGRESS"
COMMENT = "k8s-step-operator pod network"
# Sysctls changed only when needed, and restored by `down` to what they were.
GLOBAL_SYSCTLS = {
    # Bridged replies between pods must pass conntrack to be un-NATed after a Service DNAT.
    "net/bridge/bridge-nf-call-iptables": "1",
}
PROCS = ("kube-proxy", "coredns", "gateway")
KUBE_PROXY_PORTS = ("kube-proxy-healthz", "kube-proxy-metrics")
COREDNS_PORTS = ("coredns", "coredns-health", "coredns-ready")
PORT_NAMES = KUBE_PROXY_PORTS + COREDNS_PORTS


@dataclass(frozen=True)
class GatewayService:
    """A Service whose backend is a host process, reached by pods through the gateway."""

    namespace: str
    name: str
    port_name: str
    port: int
    # The name of the host process's loopback port in the cluster's state.json.
    cluster_port: str


# What pods reach on the host, and nothing else. `kubernetes` exists already (the API server
# creates it); the others are created here.
GATEWAY_SERVICES = (
    GatewayService("default", "kubernetes", "https", 443, "kube-apiserver"),
    GatewayService(SERVICES_NAMESPACE, "seaweedfs", "s3", 8333, "seaweedfs-s3"),
    GatewayService(SERVICES_NAMESPACE, "zenml", "http", 8080, "zenml-server"),
)


def service_url(name: str, *, scheme: str = "http") -> str:
    """The URL a pod uses for the gateway Service ``name`` (by its cluster DNS name)."""
    for s in GATEWAY_SERVICES:
        if s.name == name:
            return f"{scheme}://{s.name}.{s.namespace}.svc.{CLUSTER_DOMAIN}:{s.port}"
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Commands


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def ipt(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("iptables", "-w", "5", "-t", table, *args, check=check)


def _rule_exists(table: str, chain: str, rule: Sequence[str]) -> bool:
    return ipt(table, "-C", chain, *rule, check=False).returncode == 0


def _chain_exists(table: str, chain: str, binary: str = "iptables") -> bool:
    r = run(binary, "-w", "5", "-t", table, "-S", chain, check=False)
    return r.returncode == 0


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    (Path("/proc/sys") / name).write_text(value + "\n")


def _load_state() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save_state(state: dict[str, Any]) -> None:
    NET.mkdir(parents=True, exist_ok=True)
    kit.write_atomic(STATE_FILE, json.dumps(state, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The host side: ranges, bridge, routes, sysctls, guard rules


def _ours_route(r: dict[str, Any]) -> bool:
    dst = r.get("dst", "")
    if r.get("dev") == BRIDGE:
        return True
    return r.get("type") == "unreachable" and dst in (str(CLUSTER_CIDR), str(SERVICE_CIDR))


def range_conflicts() -> list[str]:
    """Addresses and routes of this machine that overlap the pod or Service range (not ours).

    The ranges must be unused here: otherwise pod or Service traffic could reach a real network.
    """
    found = []
    nets = (CLUSTER_CIDR, SERVICE_CIDR)
    routes = json.loads(run("ip", "-4", "-j", "route", "show", "table", "all").stdout or "[]")
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("", "default") or _ours_route(r) or r.get("type") in ("local", "broadcast"):
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(dst, strict=False)
            if any(net.overlaps(n) for n in nets):
                found.append(f"route {dst} dev {r.get('dev', '?')}")
    for link in json.loads(run("ip", "-4", "-j", "addr").stdout or "[]"):
        if link.get("ifname") == BRIDGE:
            continue
        for a in link.get("addr_info") or []:
            ip = ipaddress.ip_address(a["local"])
            if any(ip in n for n in nets):
                found.append(f"address {ip} on {link.get('ifname')}")
    return found


def _bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def setup_host() -> None:
    """The bridge, its address and sysctls, the safety routes and the guard chains (idempotent).

    Safety first: the unreachable routes go in before anything could send to either range.
    """
    conflicts = range_conflicts()
    if conflicts:
        raise SystemExit(
            f"the pod range {CLUSTER_CIDR} or the Service range {SERVICE_CIDR} is in use on this "
            f"machine ({'; '.join(conflicts)}): refusing to set up the pod network"
        )
    for cidr in (CLUSTER_CIDR, SERVICE_CIDR):
        run("ip", "route", "replace", "unreachable", str(cidr))
    state = _load_state()
    saved: dict[str, str] = state.setdefault("sysctls", {})
    for name, want in GLOBAL_SYSCTLS.items():
        have = _read_sysctl(name)
        if have is None:
            raise SystemExit(
                f"/proc/sys/{name} is missing (no br_netfilter in this kernel): Service replies "
                "between pods on the bridge would bypass conntrack"
            )
        if have != want:
            saved.setdefault(name, have)
            _write_sysctl(name, want)
            log(f"set {name}={want} (was {have}; restored by down)")
    _save_state(state)
    if not _bridge_exists():
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        log(f"created bridge {BRIDGE}")
    run("ip", "link", "set", BRIDGE, "address", BRIDGE_MAC)
    # Per-interface settings go with the bridge when it is removed. No IPv6 on it at all.
    _write_sysctl(f"net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    # Forwarding on the bridge only: a Service address DNATed to another pod is routed back
    # out of the bridge. The mangle guard below drops anything headed elsewhere.
    _write_sysctl(f"net/ipv4/conf/{BRIDGE}/forwarding", "1")
    gw = f"{GATEWAY}/{NODE_CIDR.prefixlen}"
    have = run("ip", "-4", "-j", "addr", "show", "dev", BRIDGE).stdout
    if gw.split("/")[0] not in have:
        run("ip", "addr", "add", gw, "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


def guard_rules(ports: Iterable[int], dns_port: int) -> dict[str, list[list[str]]]:
    """The guard chains' rules: what pods may reach on the host, and where the bridge forwards."""
    tcp = ",".join(str(p) for p in sorted({*ports, dns_port}))
    return {
        FILTER_CHAIN: [
            ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"],
            [
                "-d",
                f"{GATEWAY}/32",
                "-p",
                "tcp",
                "-m",
                "multiport",
                "--dports",
                tcp,
                "-j",
                "RETURN",
            ],
            ["-d", f"{GATEWAY}/32", "-p", "udp", "--dport", str(dns_port), "-j", "RETURN"],
            ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
            ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
        ],
        MANGLE_CHAIN: [
            ["-o", BRIDGE, "-j", "RETURN"],
            ["-j", "DROP"],
        ],
        # The last line: whatever has an address of either range and would leave by any
        # interface but the bridge or loopback is dropped (and counted: the tests read the
        # counters, which stay at zero).
        EGRESS_CHAIN: [
            ["-o", BRIDGE, "-j", "RETURN"],
            ["-o", "lo", "-j", "RETURN"],
            *(
                [flag, str(cidr), "-j", "DROP"]
                for cidr in (CLUSTER_CIDR, SERVICE_CIDR)
                for flag in ("-s", "-d")
            ),
        ],
    }


# (table, hook, chain, which packets jump): the input and forward guards see what comes from
# the bridge; the egress guard sees every packet that leaves.
GUARD_JUMPS = (
    ("filter", "INPUT", FILTER_CHAIN, ("-i", BRIDGE)),
    ("mangle", "FORWARD", MANGLE_CHAIN, ("-i", BRIDGE)),
    ("mangle", "POSTROUTING", EGRESS_CHAIN, ()),
)


def _jump(chain: str, match: Sequence[str]) -> list[str]:
    return [*match, "-m", "comment", "--comment", COMMENT, "-j", chain]


def install_guards(ports: Iterable[int], dns_port: int) -> None:
    """(Re)write the guard chains and jump to them first from INPUT and FORWARD.

    The forward guard lives in the mangle table, which kube-proxy leaves alone, so no ACCEPT of
    kube-proxy's filter chains can come before it. The input guard only rejects, so its place
    among kube-proxy's filter rules does not matter.
    """
    rules = guard_rules(ports, dns_port)
    for table, hook, chain, match in GUARD_JUMPS:
        if not _chain_exists(table, chain):
            ipt(table, "-N", chain)
        have = ipt(table, "-S", chain).stdout.splitlines()[1:]
        want = [" ".join(["-A", chain, *r]) for r in rules[chain]]
        if [_normal(h) for h in have] != [_normal(w) for w in want]:
            # Rewritten only when it changed: a flush would reset the drop counters.
            ipt(table, "-F", chain)
            for rule in rules[chain]:
                ipt(table, "-A", chain, *rule)
        if not _rule_exists(table, hook, _jump(chain, match)):
            ipt(table, "-I", hook, "1", *_jump(chain, match))


def _normal(rule: str) -> str:
    """A rule as ``iptables -S`` prints it, for comparing (it adds ``-m tcp`` and the like)."""
    words = rule.replace('"', "").split()
    out = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w == "-m" and i + 1 < len(words) and words[i + 1] in ("tcp", "udp"):
            skip = True
            continue
        out.append(w.removesuffix("/32") if w.startswith(GATEWAY) else w)
    return " ".join(out)


def remove_guards() -> None:
    for table, hook, chain, match in GUARD_JUMPS:
        while _rule_exists(table, hook, _jump(chain, match)):
            ipt(table, "-D", hook, *_jump(chain, match))
        if _chain_exists(table, chain):
            ipt(table, "-F", chain)
            ipt(table, "-X", chain)


def remove_kube_chains() -> list[str]:
    """Remove every KUBE-* chain and the rules that jump to it (IPv4 and IPv6); what was left.

    Run after ``kube-proxy --cleanup`` (which removes its own): the kubelet's canary chains
    remain otherwise. Only one real node runs on a machine, so every KUBE-* chain is ours.
    """
    removed = []
    for binary in ("iptables", "ip6tables"):
        save = run(f"{binary}-save", check=False).stdout
        table = ""
        jumps: list[tuple[str, list[str]]] = []
        chains: list[tuple[str, str]] = []
        for line in save.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":KUBE-"):
                chains.append((table, line[1:].split()[0]))
            elif line.startswith("-A ") and " -j KUBE-" in line:
                words = line.split()
                if not words[1].startswith("KUBE-"):
                    jumps.append((table, words[1:]))
        for table, rule in jumps:
            run(binary, "-w", "5", "-t", table, "-D", *_unquote(rule), check=False)
        for table, chain in chains:
            run(binary, "-w", "5", "-t", table, "-F", chain, check=False)
        for table, chain in chains:
            if run(binary, "-w", "5", "-t", table, "-X", chain, check=False).returncode == 0:
                removed.append(f"{binary} {table} {chain}")
    return removed


def _unquote(words: list[str]) -> list[str]:
    """iptables-save's words back into arguments (comments are quoted, with spaces)."""
    import shlex

    return shlex.split(" ".join(words))


def leftovers() -> list[str]:
    """What of this network is still on the machine (empty after a clean ``down``)."""
    left = []
    if _bridge_exists():
        left.append(f"bridge {BRIDGE}")
    routes = json.loads(run("ip", "-4", "-j", "route", "show", "table", "all").stdout or "[]")
    for r in routes:
        if _ours_route(r) and r.get("type") != "local" and r.get("type") != "broadcast":
            left.append(f"route {r.get('type', '')} {r.get('dst')} {r.get('dev', '')}".strip())
    for binary in ("iptables", "ip6tables"):
        for line in run(f"{binary}-save", check=False).stdout.splitlines():
            if line.startswith((":KUBE-", ":K8SSO-")) or (
                line.startswith("-A") and ("KUBE-" in line or "K8SSO-" in line or BRIDGE in line)
            ):
                left.append(f"{binary}: {line}")
    for pid in kit.all_pids():
        cmd = kit.proc_cmdline(pid)
        if cmd and any(_ours(name, cmd) for name in PROCS) and kit.proc_alive(pid):
            left.append(f"process {Path(cmd[0]).name} (pid {pid})")
    return left


def teardown_host() -> None:
    """Undo :func:`setup_host` and :func:`install_guards`; restore the sysctls changed."""
    remove_guards()
    if _bridge_exists():
        run("ip", "link", "del", BRIDGE)
        log(f"removed bridge {BRIDGE}")
    for cidr in (CLUSTER_CIDR, SERVICE_CIDR):
        while run("ip", "route", "del", "unreachable", str(cidr), check=False).returncode == 0:
            pass
    state = _load_state()
    for name, value in (state.get("sysctls") or {}).items():
        with contextlib.suppress(OSError):
            _write_sysctl(name, value)
            log(f"restored {name}={value}")
    state["sysctls"] = {}
    _save_state(state)


# ---------------------------------------------------------------------------------------------
# Certificates, kubeconfigs, config files


def _issue(name: str, cn: str) -> None:
    ca = kit.CertAuthority(cluster.STATE_DIR / "pki")
    pki = NET / "pki"
    if (pki / f"{name}.key").exists() and ca.signed(pki / f"{name}.crt"):
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca.issue(pki, name, cn, client=True)


def _kubeconfig(name: str, st: cluster.State) -> Path:
    path = NET / f"{name}.kubeconfig"
    kit.write_kubeconfig(
        path,
        server=st.server,
        ca=st.pki / "ca.crt",
        cert=NET / "pki" / f"{name}.crt",
        key=NET / "pki" / f"{name}.key",
        user=name,
        cluster_name=cluster.CLUSTER_NAME,
    )
    return path


def kube_proxy_config(st: cluster.State, ports: dict[str, int], node_name: str) -> str:
    import yaml

    cfg: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(NET / "kube-proxy.kubeconfig")},
        "hostnameOverride": node_name,
        # The node's address on the pod network; its Node object says 127.0.0.1.
        "bindAddress": GATEWAY,
        "healthzBindAddress": f"{LOOPBACK}:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"{LOOPBACK}:{ports['kube-proxy-metrics']}",
        "mode": "iptables",
        "clusterCIDR": str(CLUSTER_CIDR),
        "detectLocalMode": "BridgeInterface",
        "detectLocal": {"bridgeInterface": BRIDGE},
        # NodePorts on the gateway only (not on the machine's own interfaces), and none on
        # loopback: that would need route_localnet=1 on every interface.
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s"},
        # Zeros leave the machine's conntrack settings as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def corefile(ports: dict[str, int]) -> str:
    """CoreDNS: the cluster zone from the API server, nothing else (no upstream resolver).

    Names outside the cluster domain get REFUSED at once: nothing is forwarded off the machine.
    """
    kubeconfig = NET / "coredns.kubeconfig"
    zones = f"{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa"
    # Every zone of the server block names the port: one without a port is served on 53.
    keys = " ".join(f"{z}:{ports['coredns']}" for z in zones.split())
    return f"""{keys} {{
    bind {LOOPBACK} {GATEWAY}
    errors
    health {LOOPBACK}:{ports["coredns-health"]}
    ready {LOOPBACK}:{ports["coredns-ready"]}
    kubernetes {zones} {{
        kubeconfig {kubeconfig} {cluster.CLUSTER_NAME}
        pods insecure
        ttl 5
    }}
    loadbalance
}}
"""


def coredns_rbac() -> list[dict[str, Any]]:
    """What CoreDNS's kubernetes plugin reads, as the ClusterRole its own manifests grant."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:coredns",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
        ],
    }
    return [role, binding]


# ---------------------------------------------------------------------------------------------
# API objects: Services of host processes and their EndpointSlices on the gateway


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY}


def endpoint_slice(
    namespace: str, service: str, ports: Sequence[tuple[str, int, str]]
) -> dict[str, Any]:
    """An EndpointSlice of ``service`` with the gateway as its one endpoint."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": service,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                **_labels(),
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def service(
    namespace: str,
    name: str,
    ports: Sequence[tuple[str, int, str]],
    cluster_ip: str | None = None,
) -> dict[str, Any]:
    """A Service without selector (its EndpointSlice is written here, not by a controller)."""
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        "spec": spec,
    }


def api_objects(st: cluster.State, ports: dict[str, int]) -> list[dict[str, Any]]:
    """Everything this network adds to the API, in the order to apply it."""
    objs: list[dict[str, Any]] = [
        *coredns_rbac(),
        addons.namespace(SERVICES_NAMESPACE),
        service(
            "kube-system",
            "kube-dns",
            [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
            cluster_ip=DNS_SERVICE_IP,
        ),
        endpoint_slice(
            "kube-system",
            "kube-dns",
            [("dns", ports["coredns"], "UDP"), ("dns-tcp", ports["coredns"], "TCP")],
        ),
    ]
    for s in GATEWAY_SERVICES:
        if s.name != "kubernetes":
            objs.append(service(s.namespace, s.name, [(s.port_name, s.port, "TCP")]))
        objs.append(
            endpoint_slice(s.namespace, s.name, [(s.port_name, st.ports[s.cluster_port], "TCP")])
        )
    return objs


def publish(st: cluster.State, ports: dict[str, int]) -> None:
    api = cluster.Api(st)
    for obj in api_objects(st, ports):
        addons.apply(api, obj)


def unpublish(st: cluster.State) -> None:
    """Remove the EndpointSlices that name the gateway (the Services stay: they cost nothing)."""
    api = cluster.Api(st)
    for obj in api_objects(st, dict.fromkeys(PORT_NAMES, 1)):
        if obj["kind"] == "EndpointSlice":
            addons.delete(api, obj)


# ---------------------------------------------------------------------------------------------
# Processes


def _bin(name: str) -> Path:
    v = kit.versions()
    b = kit.cache_dir() / "bin"
    if name == "kube-proxy":
        return cluster.binaries()["kubectl"].parent / "kube-proxy"
    return b / f"coredns-{v['COREDNS_VERSION']}" / "coredns"


def binaries_missing() -> list[Path]:
    return [p for p in (_bin("kube-proxy"), _bin("coredns")) if not p.exists()]


def _ours(name: str, cmd: list[str]) -> bool:
    if cmd[:1] == ["setsid"]:  # the instant before the launcher execs the command
        cmd = cmd[1:]
    if not cmd:
        return False
    if name == "kube-proxy":
        return Path(cmd[0]).name == "kube-proxy" and f"--config={NET / 'kube-proxy.yaml'}" in cmd
    if name == "coredns":
        return Path(cmd[0]).name == "coredns" and str(NET / "Corefile") in cmd
    return str(HERE / "gateway.py") in cmd and str(NET) in cmd


def pid_of(name: str) -> int | None:
    pid = kit.read_pidfile(RUN / f"{name}.pid")
    if pid is not None and kit.proc_alive(pid) and _ours(name, kit.proc_cmdline(pid)):
        return pid
    for pid in kit.all_pids():
        if _ours(name, kit.proc_cmdline(pid)) and kit.proc_alive(pid):
            return pid
    return None


def argv(name: str, st: cluster.State) -> list[str]:
    if name == "kube-proxy":
        return [str(_bin("kube-proxy")), f"--config={NET / 'kube-proxy.yaml'}", "--v=1"]
    if name == "coredns":
        return [str(_bin("coredns")), "-conf", str(NET / "Corefile")]
    ports = ",".join(str(st.ports[s.cluster_port]) for s in GATEWAY_SERVICES)
    return [
        sys.executable,
        str(HERE / "gateway.py"),
        "--listen",
        GATEWAY,
        "--to",
        LOOPBACK,
        "--ports",
        ports,
        "--state",
        str(NET),
    ]


def _start(name: str, st: cluster.State) -> None:
    want = argv(name, st)
    pid = pid_of(name)
    if pid is not None and kit.proc_cmdline(pid) != want:
        log(f"{name} runs with other arguments; restarting it")
        stop(name)
        pid = None
    if pid is None:
        pid = kit.spawn(want, logfile=LOGS / f"{name}.log", pidfile=RUN / f"{name}.pid", cwd=NET)
        log(f"started {name} (pid {pid})")


def stop(name: str, grace: float = 10.0) -> None:
    pid = pid_of(name)
    (RUN / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return
    kit.terminate(pid, grace, name=name, log=log)
    log(f"stopped {name} (pid {pid})")


def _healthy(name: str, st: cluster.State, ports: dict[str, int]) -> bool:
    if pid_of(name) is None:
        return False
    if name == "kube-proxy":
        code, _ = kit.http_get(f"http://{LOOPBACK}:{ports['kube-proxy-healthz']}/healthz")
    elif name == "coredns":
        code, _ = kit.http_get(f"http://{LOOPBACK}:{ports['coredns-ready']}/ready")
    else:
        import socket

        try:
            with socket.create_connection((GATEWAY, st.ports["kube-apiserver"]), timeout=2):
                return True
        except OSError:
            return False
    return code == 200


def _synced(st: cluster.State) -> bool:
    """kube-proxy has written the rules of the `kubernetes` Service's endpoint."""
    want = f"{GATEWAY}:{st.ports['kube-apiserver']}"
    return any(
        "default/kubernetes" in line and want in line
        for line in ipt("nat", "-S", check=False).stdout.splitlines()
    )


# ---------------------------------------------------------------------------------------------
# Up and down


def up(st: cluster.State, ports: dict[str, int], node_name: str) -> None:
    """Start kube-proxy, CoreDNS and the gateway, and publish the Services' endpoints.

    Call after :func:`setup_host` and once the node is registered (kube-proxy reads its Node).
    """
    missing = binaries_missing()
    if missing:
        raise SystemExit(
            f"{', '.join(str(m) for m in missing)} missing; run `make binaries` "
            "(bash e2e/build/build.sh core)"
        )
    t0 = time.monotonic()
    NET.mkdir(parents=True, exist_ok=True)
    install_guards((st.ports[s.cluster_port] for s in GATEWAY_SERVICES), ports["coredns"])
    _issue("kube-proxy", "system:kube-proxy")
    _issue("coredns", "system:coredns")
    _kubeconfig("kube-proxy", st)
    _kubeconfig("coredns", st)
    kit.write_atomic(NET / "kube-proxy.yaml", kube_proxy_config(st, ports, node_name))
    corefile_text = corefile(ports)
    corefile_path = NET / "Corefile"
    changed = not corefile_path.exists() or corefile_path.read_text() != corefile_text
    kit.write_atomic(corefile_path, corefile_text)
    if changed:
        stop("coredns")
    publish(st, ports)
    for name in PROCS:
        _start(name, st)
    for name in PROCS:
        wait_for(f"{name} to become healthy", lambda n=name: _healthy(n, st, ports), 60)  # type: ignore[misc]
    wait_for("kube-proxy to program the `kubernetes` Service", lambda: _synced(st), 60)
    log(f"pod network up in {time.monotonic() - t0:.1f} s")


def healthy(st: cluster.State, ports: dict[str, int]) -> dict[str, bool]:
    return {name: _healthy(name, st, ports) for name in PROCS}


def down(st: cluster.State | None) -> None:
    """Stop the processes, remove the API objects and every host change (idempotent)."""
    for name in reversed(PROCS):
        stop(name)
    if st is not None and cluster.healthy(st, "kube-apiserver"):
        with contextlib.suppress(RuntimeError, OSError):
            unpublish(st)
    kp = _bin("kube-proxy")
    if kp.exists():
        r = run(str(kp), "--cleanup", "--v=0", check=False)
        if r.returncode != 0:
            log(f"kube-proxy --cleanup exited {r.returncode}: {r.stderr.strip()[-300:]}")
    removed = remove_kube_chains()
    if removed:
        log(f"removed leftover chains: {', '.join(removed)}")
    teardown_host()


def _main(args: Sequence[str]) -> int:
    """``network.py leftovers``: print what is left (exit 1 if anything)."""
    if list(args) == ["leftovers"]:
        left = leftovers()
        for line in left:
            print(line)
        return 1 if left else 0
    print("usage: network.py leftovers", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("needs root (iptables)", file=sys.stderr)
    sys.exit(_main(sys.argv[1:]))
