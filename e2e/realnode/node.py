#!/usr/bin/env python3
"""A real kubelet + containerd node that joins the local cluster and runs step containers.

Why this exists: KWOK's simulated nodes make every pod "succeed" without running anything. This
node runs the containers for real (Debian's containerd 1.6 and runc on cgroup v1, driven by the
kubelet built from the same Kubernetes version as the control plane), so tests see real exit
codes, real OOM kills from memory limits and real logs through ``pods/log``.

It looks like a node of the H100 pool (same GPU labels and taint, ``nvidia.com/gpu`` in its
status capacity through the documented extended-resource patch) plus the label
``k8s-step-operator.io/real-node=true`` and the taint ``k8s-step-operator.io/real-node=true:
NoSchedule``, so that only pods that ask for it land here and tests written for the simulated
pool never do.

Everything lives under ``<repo>/.cluster/realnode/``: containerd's config, root, state and
socket, the kubelet's root directory, certificates, logs and pid files. Nothing listens beyond
127.0.0.1 and the pod bridge's gateway. Pods get a network namespace with an address from
10.244.0.0/24 on the bridge ``k8sso0``, kube-proxy makes Services work and CoreDNS answers for
``cluster.local``; no pod has a route beyond the bridge and the Service range (``network.py``
says how, and why nothing leaves the machine).

Usage (as root, after ``bash e2e/realnode/setup-system.sh`` and ``make cluster``)::

    python e2e/realnode/node.py up       # idempotent; imports the step images too
    python e2e/realnode/node.py up --images zenml   # ... and the ZenML step image
    python e2e/realnode/node.py images zenml        # import into the running node only
    python e2e/realnode/node.py status
    python e2e/realnode/node.py down     # stops everything it started, unmounts, cleans up
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
E2E = HERE.parent
sys.path.insert(0, str(E2E))
sys.path.insert(0, str(E2E / "images"))

import build as images  # noqa: E402
import cluster  # noqa: E402
import clusterkit as kit  # noqa: E402
import network  # noqa: E402
from clusterkit import LOOPBACK, RestClient, wait_for  # noqa: E402

NODE_NAME = os.environ.get("K8SSO_REAL_NODE_NAME", cluster.REAL_NODE_NAME)
ROOT = cluster.STATE_DIR / "realnode"
GPUS = int(os.environ.get("K8SSO_REAL_NODE_GPUS", "8"))
GPU_RESOURCE = "nvidia.com/gpu"
REAL_LABEL = "k8s-step-operator.io/real-node"
LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.count": str(GPUS),
    REAL_LABEL: "true",
}
TAINTS = (
    "nvidia.com/gpu=present:NoSchedule",
    f"{REAL_LABEL}=true:NoSchedule",
)
# Seconds between checks that the GPU capacity and the address are still in the node's status
# (the kubelet clears extended resources when it registers again after a restart).
KEEPER_INTERVAL_S = 2.0
# How long the keeper waits for a kubelet that stopped (a restart) before it exits.
KEEPER_ORPHAN_S = 60.0
PROCS = ("containerd", "kubelet", "status-keeper")
PORT_NAMES = ("kubelet", "kubelet-healthz", *network.PORT_NAMES)


log = kit.logger("realnode")


# ---------------------------------------------------------------------------------------------
# Paths and ports


class Paths:
    root = ROOT
    pki = ROOT / "pki"
    run = ROOT / "run"
    logs = ROOT / "logs"
    containerd_root = ROOT / "containerd" / "root"
    containerd_state = ROOT / "containerd" / "state"
    containerd_config = ROOT / "containerd" / "config.toml"
    sock = ROOT / "containerd.sock"
    cni_bin = ROOT / "cni" / "bin"
    cni_conf = ROOT / "cni" / "net.d"
    cni_data = ROOT / "cni" / "ipam"
    kubelet_root = ROOT / "kubelet"
    kubelet_config = ROOT / "kubelet-config.yaml"
    kubelet_kubeconfig = ROOT / "kubelet.kubeconfig"
    pod_logs = ROOT / "pod-logs"
    resolv = ROOT / "resolv.conf"
    state = ROOT / "state.json"

    @staticmethod
    def pidfile(name: str) -> Path:
        return Paths.run / f"{name}.pid"

    @staticmethod
    def logfile(name: str) -> Path:
        return Paths.logs / f"{name}.log"


def kubelet_bin() -> Path:
    return cluster.binaries()["kubectl"].parent / "kubelet"


def ports() -> dict[str, int]:
    """The node's loopback ports, picked once; a name added since is picked and kept too."""
    have: dict[str, int] = {}
    if Paths.state.exists():
        have = {k: int(v) for k, v in json.loads(Paths.state.read_text())["ports"].items()}
    p = kit.free_ports(PORT_NAMES, have)
    if p != have:
        Paths.state.parent.mkdir(parents=True, exist_ok=True)
        kit.write_atomic(Paths.state, json.dumps({"ports": p}, indent=2) + "\n")
    return p


# ---------------------------------------------------------------------------------------------
# Certificates and config files


def make_kubelet_cert(ca_dir: Path) -> None:
    """A client+serving certificate for system:node:<name>, signed by the cluster's CA."""
    ca = kit.CertAuthority(ca_dir)
    crt, key = Paths.pki / "kubelet.crt", Paths.pki / "kubelet.key"
    # A new cluster has a new CA; a certificate from the old one must be replaced.
    if key.exists() and ca.signed(crt):
        return
    Paths.pki.mkdir(parents=True, exist_ok=True)
    ca.issue(
        Paths.pki,
        "kubelet",
        f"system:node:{NODE_NAME}",
        "system:nodes",
        client=True,
        server=True,
        dns=["localhost", NODE_NAME],
        ips=[LOOPBACK],
    )
    log(f"issued a certificate for system:node:{NODE_NAME}")


def write_kubeconfig(server: str, ca: Path) -> None:
    kit.write_kubeconfig(
        Paths.kubelet_kubeconfig,
        server=server,
        ca=ca,
        cert=Paths.pki / "kubelet.crt",
        key=Paths.pki / "kubelet.key",
        user=NODE_NAME,
        cluster_name="local",
    )


def containerd_config(sandbox_image: str) -> str:
    q = json.dumps  # TOML basic strings share JSON's escaping for these paths
    return f"""version = 2
root = {q(str(Paths.containerd_root))}
state = {q(str(Paths.containerd_state))}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = {q(str(Paths.sock))}

[ttrpc]
  address = {q(str(Paths.sock) + ".ttrpc")}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {q(str(ROOT / "containerd" / "opt"))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {q(sandbox_image)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (as in many sandboxed VMs and CI runners) runc cannot lower a
  # process's oom_score_adj ("failed to update /proc/self/oom_score_adj: Permission denied");
  # clamp the sandbox's -998 and guaranteed pods' -997 to containerd's own value instead.
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {q(str(Paths.containerd_state / "runc"))}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {q(str(Paths.cni_bin))}
    conf_dir = {q(str(Paths.cni_conf))}
    max_conf_num = 1
"""


# The pod network: Debian's standard CNI plugins. `bridge` puts each pod's veth on the bridge that
# network.setup_host() made (it must not be the gateway: that would make it turn on forwarding
# for every interface); `host-local` hands out the node's /24 and gives pods exactly two routes,
# their subnet and the Service range through the gateway. No default route.
CNI_PLUGINS = ("loopback", "bridge", "host-local")


def cni_config() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "k8sso-podnet",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.BRIDGE,
                "isGateway": False,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(network.NODE_CIDR), "gateway": network.GATEWAY}]],
                    "routes": [{"dst": str(network.SERVICE_CIDR), "gw": network.GATEWAY}],
                    "dataDir": str(Paths.cni_data),
                },
            }
        ],
    }


def write_cni() -> None:
    Paths.cni_bin.mkdir(parents=True, exist_ok=True)
    Paths.cni_conf.mkdir(parents=True, exist_ok=True)
    for name in CNI_PLUGINS:
        src = Path("/usr/lib/cni") / name
        if not src.exists():
            raise SystemExit(f"{src} missing; run `bash e2e/realnode/setup-system.sh`")
        link = Paths.cni_bin / name
        if not link.is_symlink() or link.resolve() != src.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(src)
    # The Python plugin of earlier versions of this node.
    (Paths.cni_bin / "k8sso-podnet").unlink(missing_ok=True)
    # containerd reloads on every write: replace the file whole.
    target = Paths.cni_conf / "10-k8sso-podnet.conflist"
    tmp = Paths.cni_bin / ".conflist.tmp"
    tmp.write_text(json.dumps(cni_config(), indent=2) + "\n")
    tmp.replace(target)


def kubelet_config(p: dict[str, int]) -> str:
    import yaml

    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": LOOPBACK,
        "port": p["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": p["kubelet-healthz"],
        "tlsCertFile": str(Paths.pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(Paths.pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(cluster.STATE_DIR / "pki" / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{Paths.sock}",
        # cgroup v1 without systemd as PID 1.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        # Locally imported images can never be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Shared build machines run with little free disk or memory at times; only evict when
        # truly out.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "resolvConf": str(Paths.resolv),
        "clusterDomain": network.CLUSTER_DOMAIN,
        # The kube-dns Service: CoreDNS on the host, behind the pod network's gateway.
        "clusterDNS": [network.DNS_SERVICE_IP],
        "registerNode": True,
        "registerWithTaints": [
            {
                "key": t.split("=")[0],
                "value": t.split("=")[1].split(":")[0],
                "effect": t.split(":")[1],
            }
            for t in TAINTS
        ],
        "podLogsDir": str(Paths.pod_logs),
        "volumePluginDir": str(ROOT / "volume-plugins"),
        "maxPods": 30,
        "podPidsLimit": 4096,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusUpdateFrequency": "2s",
        "nodeStatusReportFrequency": "1m",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Processes


def _ours(name: str, cmd: list[str]) -> bool:
    """Whether a command line is the ``name`` process of this node (not another instance's)."""
    if not cmd:
        return False
    if name == "containerd":
        return Path(cmd[0]).name == "containerd" and str(Paths.containerd_config) in cmd
    if name == "kubelet":
        return Path(cmd[0]).name == "kubelet" and f"--config={Paths.kubelet_config}" in cmd
    return "keep-status" in cmd and str(Path(__file__).resolve()) in cmd


def pid_of(name: str) -> int | None:
    """The pid of this node's ``name`` process: from its pid file, else found in /proc.

    The /proc scan finds a process that runs with this node's files but whose pid file is
    gone or stale (started by hand, or by an ``up`` that was interrupted).
    """
    pid = kit.read_pidfile(Paths.pidfile(name))
    if pid is not None and kit.proc_alive(pid) and _ours(name, kit.proc_cmdline(pid)):
        return pid
    for pid in kit.all_pids():
        if _ours(name, kit.proc_cmdline(pid)) and kit.proc_alive(pid):
            with contextlib.suppress(OSError):
                Paths.run.mkdir(parents=True, exist_ok=True)
                Paths.pidfile(name).write_text(f"{pid}\n")
            return pid
    return None


# Image pulls may never leave the machine: containerd sends every registry request to a proxy
# on a closed loopback port, so a pod whose image is missing fails at once with ErrImagePull
# instead of reaching out (Go's resolver does no DNS lookup for a proxied request either).
NO_PULL_PROXY = "http://127.0.0.1:9"
CONTAINERD_ENV = {
    "HTTP_PROXY": NO_PULL_PROXY,
    "HTTPS_PROXY": NO_PULL_PROXY,
    "http_proxy": NO_PULL_PROXY,
    "https_proxy": NO_PULL_PROXY,
    "NO_PROXY": "",
    "no_proxy": "",
}


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    pid = kit.spawn(
        argv, logfile=Paths.logfile(name), pidfile=Paths.pidfile(name), cwd=ROOT, env=env
    )
    log(f"started {name} (pid {pid})")
    return pid


def stop(name: str, grace: float = 15.0) -> None:
    pid = pid_of(name)
    if pid is None:
        Paths.pidfile(name).unlink(missing_ok=True)
        return
    kit.terminate(pid, grace, name=name, log=log)
    Paths.pidfile(name).unlink(missing_ok=True)
    log(f"stopped {name} (pid {pid})")


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["ctr", "--address", str(Paths.sock), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and r.returncode != 0:
        raise SystemExit(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def containerd_ok() -> bool:
    if not Paths.sock.exists():
        return False
    try:
        return ctr("version", check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def kubelet_healthy(p: dict[str, int]) -> bool:
    code, _ = kit.http_get(f"http://{LOOPBACK}:{p['kubelet-healthz']}/healthz")
    return code == 200


# ---------------------------------------------------------------------------------------------
# The Node object


def node_api() -> RestClient:
    """A client of the API server with this node's own identity."""
    st = cluster.State.load()
    ctx = kit.tls_context(st.pki / "ca.crt", Paths.pki / "kubelet.crt", Paths.pki / "kubelet.key")
    return RestClient(st.server, ctx)


def get_node() -> dict[str, Any] | None:
    code, body = node_api().request("GET", f"/api/v1/nodes/{NODE_NAME}")
    return body if code == 200 and isinstance(body, dict) else None


def heartbeat_since(node: dict[str, Any], since: dt.datetime | None) -> bool:
    """True when the kubelet reported Ready after ``since`` (not a status left by a previous
    kubelet)."""
    if since is None:
        return True
    for c in node.get("status", {}).get("conditions") or []:
        if c["type"] == "Ready" and c.get("lastHeartbeatTime"):
            beat = dt.datetime.fromisoformat(c["lastHeartbeatTime"].replace("Z", "+00:00"))
            return beat >= since
    return False


def node_ready(node: dict[str, Any] | None) -> bool:
    if not node:
        return False
    conds = node.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    taints = node.get("spec", {}).get("taints") or []
    return ready and not any(t["key"].startswith("node.kubernetes.io/") for t in taints)


WANT_ADDRESSES = [
    {"type": "InternalIP", "address": LOOPBACK},
    {"type": "Hostname", "address": NODE_NAME},
]


def gpus_advertised(node: dict[str, Any] | None) -> bool:
    if not node:
        return False
    status = node.get("status", {})
    want = str(GPUS)
    return bool(
        status.get("capacity", {}).get(GPU_RESOURCE) == want
        and status.get("allocatable", {}).get(GPU_RESOURCE) == want
    )


def status_patch(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that brings the node's status to what this node advertises.

    * ``nvidia.com/gpu`` in the capacity: the documented extended-resource patch; the kubelet
      copies it into allocatable and clears it when it registers again after a restart.
    * The node's address: the kubelet refuses to report a loopback ``--node-ip`` ("nodeIP can't
      be loopback address") and leaves the addresses as they are; any other address it would
      detect is one nothing may dial here. So the address is set here, once, and the kubelet
      keeps it.
    """
    status = node.get("status", {})
    ops: list[dict[str, Any]] = []
    if status.get("capacity", {}).get(GPU_RESOURCE) != str(GPUS):
        path = "/status/capacity/" + GPU_RESOURCE.replace("~", "~0").replace("/", "~1")
        ops.append({"op": "add", "path": path, "value": str(GPUS)})
    if (status.get("addresses") or []) != WANT_ADDRESSES:
        ops.append({"op": "add", "path": "/status/addresses", "value": WANT_ADDRESSES})
    return ops


def ensure_status(node: dict[str, Any]) -> bool:
    """Apply :func:`status_patch` with the node's own identity. True if something changed."""
    ops = status_patch(node)
    if not ops:
        return False
    code, body = node_api().request(
        "PATCH", f"/api/v1/nodes/{NODE_NAME}/status", ops, "application/json-patch+json"
    )
    if code != 200:
        log(f"patching the status of node {NODE_NAME} failed: HTTP {code}: {body}")
        return False
    log(f"patched node status: {', '.join(o['path'] for o in ops)}")
    return True


def keep_status() -> int:
    """Re-apply the node's GPU capacity and address whenever they are missing.

    Exits once the kubelet has been gone for a while (``down``, or the whole cluster state
    removed), so that it never outlives the node it serves.
    """
    kubelet_gone_since: float | None = None
    while True:
        if pid_of("kubelet") is None:
            kubelet_gone_since = kubelet_gone_since or time.monotonic()
            if time.monotonic() - kubelet_gone_since > KEEPER_ORPHAN_S:
                log("the kubelet is gone; status keeper exits")
                return 0
        else:
            kubelet_gone_since = None
            with contextlib.suppress(Exception):
                node = get_node()
                if node is not None:
                    ensure_status(node)
        time.sleep(KEEPER_INTERVAL_S)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise SystemExit("the real node needs root (containerd, runc, mounts)")
    for tool in ("containerd", "ctr", "runc", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing; run `bash e2e/realnode/setup-system.sh`")
    if not kubelet_bin().exists():
        raise SystemExit(f"{kubelet_bin()} missing; run `make binaries`")
    for tool in ("iptables", "iptables-save"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing; run `bash e2e/realnode/setup-system.sh`")
    missing = network.binaries_missing()
    if missing:
        raise SystemExit(f"{', '.join(map(str, missing))} missing; run `make core-binaries`")
    st = cluster.State.load()
    if not cluster.healthy(st, "kube-apiserver"):
        raise SystemExit("the local cluster's API server is not healthy; run `make cluster`")
    for d in (ROOT, Paths.run, Paths.logs, Paths.kubelet_root, Paths.pod_logs, Paths.cni_data):
        d.mkdir(parents=True, exist_ok=True)
    p = ports()
    kubelet_inputs = (Paths.pki / "kubelet.crt", Paths.kubelet_kubeconfig, Paths.kubelet_config)
    before = [f.read_bytes() if f.exists() else b"" for f in kubelet_inputs]
    make_kubelet_cert(st.pki)
    write_kubeconfig(st.server, st.pki / "ca.crt")
    # What pods with `dnsPolicy: Default` get (the host's resolver, as Kubernetes defines it):
    # their own loopback, where nothing answers. ClusterFirst pods ask CoreDNS.
    Paths.resolv.write_text("nameserver 127.0.0.1\noptions ndots:1 attempts:1 timeout:1\n")
    # The bridge, the safety routes and sysctls before any pod can be given an address.
    t_net = time.monotonic()
    network.setup_host()
    t_net = time.monotonic() - t_net
    write_cni()

    t_img = time.monotonic()
    pause = images.build_pause()
    config = containerd_config(pause.ref)
    Paths.containerd_config.parent.mkdir(parents=True, exist_ok=True)
    restart_containerd = (
        not Paths.containerd_config.exists() or Paths.containerd_config.read_text() != config
    )
    Paths.containerd_config.write_text(config)
    pid = pid_of("containerd")
    if pid is not None and not kit.proc_has_env(pid, CONTAINERD_ENV):
        restart_containerd = True
    if pid is not None and (restart_containerd or not containerd_ok()):
        log("containerd config changed or containerd unhealthy; restarting it")
        stop("kubelet")
        stop("containerd")
    if pid_of("containerd") is None:
        spawn(
            "containerd",
            ["containerd", "--config", str(Paths.containerd_config)],
            env=CONTAINERD_ENV,
        )
        wait_for("containerd", containerd_ok, 30)
    t_ctrd = time.monotonic() - t_img
    extra = [k for k in args.images if k not in ("pause", "shell", "python")]
    step_images = [images.build_shell(), images.build_python(), *images.build(extra)]
    images.import_images(str(Paths.sock), [pause, *step_images])
    t_images = time.monotonic() - t_img - t_ctrd

    t_kl = time.monotonic()
    Paths.kubelet_config.write_text(kubelet_config(p))
    # A new cluster (new CA, new API server port) or a new config needs a new kubelet.
    changed = before != [f.read_bytes() for f in kubelet_inputs]
    if pid_of("kubelet") is not None and (changed or not kubelet_healthy(p)):
        log("kubelet config or credentials changed, or kubelet unhealthy; restarting it")
        stop("kubelet")
    kubelet_started: dt.datetime | None = None
    if pid_of("kubelet") is None:
        kubelet_started = dt.datetime.now(dt.UTC).replace(microsecond=0)
        spawn(
            "kubelet",
            [
                str(kubelet_bin()),
                f"--config={Paths.kubelet_config}",
                f"--kubeconfig={Paths.kubelet_kubeconfig}",
                f"--root-dir={Paths.kubelet_root}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={LOOPBACK}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in LABELS.items()),
                "--v=1",
            ],
        )
    wait_for("the kubelet's /healthz", lambda: kubelet_healthy(p), 60)
    wait_for(f"node {NODE_NAME} to register", lambda: get_node() is not None, 60)
    # Restarted on every `up` so that it always runs the current code; it holds no state.
    stop("status-keeper", grace=2)
    if pid_of("status-keeper") is None:
        spawn("status-keeper", [sys.executable, str(Path(__file__).resolve()), "keep-status"])
    node = get_node()
    if node is not None:
        ensure_status(node)
    # kube-proxy waits for its Node to have an address (patched just above); pods land only
    # once `up` returns (the node's taints keep every other pod away).
    t_pn = time.monotonic()
    network.up(st, p, NODE_NAME)
    t_net += time.monotonic() - t_pn
    wait_for(
        f"node {NODE_NAME} to be Ready with {GPUS} {GPU_RESOURCE}",
        lambda: (
            (n := get_node()) is not None
            and node_ready(n)
            and heartbeat_since(n, kubelet_started)
            and gpus_advertised(n)
            and not status_patch(n)
        ),
        90,
        0.5,
    )
    log(
        f"node {NODE_NAME} Ready in {time.monotonic() - t0:.1f} s "
        f"(containerd {t_ctrd:.1f} s, images {t_images:.1f} s, pod network {t_net:.1f} s, "
        f"kubelet to Ready {time.monotonic() - t_kl:.1f} s)"
    )
    print(f"Real node {NODE_NAME} is Ready; images:")
    for img in step_images:
        print(f"  {img.alias}  ({img.ref})")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """Build (or reuse) step images and import them into the running node; nothing restarts."""
    if os.geteuid() != 0:
        raise SystemExit("importing into the real node's containerd needs root")
    if pid_of("containerd") is None or not containerd_ok():
        raise SystemExit("the real node's containerd is not running; run `node.py up` first")
    built = images.build(args.kinds)
    images.import_images(str(Paths.sock), built)
    for img in built:
        print(f"  {img.alias}  ({img.ref})")
    return 0


def _mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == str(root) or target.startswith(str(root) + "/"):
            out.append(target)
    return out


def _kubepods_cgroups() -> list[Path]:
    found = []
    for ctl in Path("/sys/fs/cgroup").iterdir():
        d = ctl / "kubepods"
        if d.is_dir():
            found.append(d)
    return found


def cmd_down(_: argparse.Namespace) -> int:
    if not ROOT.exists():
        log(f"nothing to stop: {ROOT} does not exist")
        return 0
    t0 = time.monotonic()
    stop("status-keeper", grace=2)
    stop("kubelet")
    if containerd_ok():
        # Kill and delete every container this containerd runs, sandboxes last.
        for cid in ctr("tasks", "ls", "-q", check=False).stdout.split():
            ctr("tasks", "kill", "--signal", "SIGKILL", cid, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
            if all("STOPPED" in r for r in rows):
                break
            time.sleep(0.2)
        for cid in ctr("tasks", "ls", "-q", check=False).stdout.split():
            ctr("tasks", "delete", "--force", cid, check=False)
        for cid in ctr("containers", "ls", "-q", check=False).stdout.split():
            ctr("containers", "delete", cid, check=False)
    stop("containerd")
    # Shims outlive containerd by design; ours are the ones bound to our socket.
    sock = str(Paths.sock)
    for pid in kit.all_pids():
        cmd = kit.proc_cmdline(pid)
        if cmd and Path(cmd[0]).name.startswith("containerd-shim") and sock in cmd:
            log(f"killing leftover shim pid {pid}")
            kit.kill_now(pid)
    # Container processes left without a shim still sit in the kubelet's pod cgroups.
    for base in _kubepods_cgroups():
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for word in procs.read_text().split():
                    log(f"killing leftover container process {word}")
                    kit.kill_now(int(word))
    time.sleep(0.2)
    for base in _kubepods_cgroups():
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
    for target in sorted(_mounts_under(ROOT), key=lambda t: -t.count("/")):
        r = subprocess.run(["umount", target], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True, text=True)
    # The kubelet links container logs from the fixed /var/log/containers.
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(ROOT) in os.readlink(link):
                    link.unlink()
    # containerd 1.6 always puts FIFOs and shim sockets under /run/containerd; drop the
    # directories if they are empty (a system containerd's would not be).
    for run_dir in ("/run/containerd/fifo", "/run/containerd/s", "/run/containerd"):
        with contextlib.suppress(OSError):
            os.rmdir(run_dir)
    # No container is left to use the pod network: remove it whole (processes, API objects,
    # rules, routes, the bridge, sysctls).
    st: cluster.State | None = None
    with contextlib.suppress(SystemExit):
        st = cluster.State.load()
    network.down(st)
    left = _mounts_under(ROOT)
    if left:
        raise SystemExit(f"still mounted after down: {', '.join(left)}")
    # The Node object would otherwise stay NotReady and hold pods; remove it with admin rights.
    with contextlib.suppress(SystemExit, OSError):
        if st is not None and cluster.healthy(st, "kube-apiserver"):
            code, _ = cluster.Api(st).request("DELETE", f"/api/v1/nodes/{NODE_NAME}")
            if code == 200:
                log(f"deleted node {NODE_NAME}")
    # Keep the ports, certificate and (large) containerd root for a fast next start; drop the
    # per-run state.
    for d in (Paths.containerd_state, Paths.kubelet_root, Paths.cni_data, Paths.run):
        shutil.rmtree(d, ignore_errors=True)
    log(f"real node down in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    ok = True
    p = ports() if Paths.state.exists() else {}
    for name in PROCS:
        pid = pid_of(name)
        ok &= pid is not None
        print(f"{name:12} {'running' if pid else 'stopped':8} pid={pid or '-'}")
    if pid_of("kubelet") and p:
        print(f"kubelet healthz: {'ok' if kubelet_healthy(p) else 'failing'}")
    if p and (cluster.STATE_DIR / "state.json").exists():
        for name, good in network.healthy(cluster.State.load(), p).items():
            ok &= good
            pid = network.pid_of(name)
            print(f"{name:12} {'healthy' if good else 'down':8} pid={pid or '-'}")
    node = None
    with contextlib.suppress(Exception):
        node = get_node() if (Paths.pki / "kubelet.crt").exists() else None
    if node is None:
        print(f"node {NODE_NAME}: not registered")
        return 1
    cap = node["status"].get("allocatable", {}).get(GPU_RESOURCE, "-")
    print(f"node {NODE_NAME}: {'Ready' if node_ready(node) else 'NotReady'}, {GPU_RESOURCE}={cap}")
    ok &= node_ready(node) and gpus_advertised(node)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start containerd and the kubelet (idempotent)")
    up.add_argument(
        "--images",
        nargs="*",
        default=[],
        choices=sorted(images.BUILDERS),
        metavar="KIND",
        help="step images to import besides shell and python (e.g. zenml)",
    )
    up.set_defaults(fn=cmd_up)
    imp = sub.add_parser(
        "images", help="build and import step images into the running node (restarts nothing)"
    )
    imp.add_argument("kinds", nargs="+", choices=sorted(images.BUILDERS), metavar="KIND")
    imp.set_defaults(fn=cmd_images)
    sub.add_parser("down", help="stop everything and unmount").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="processes, node readiness, GPUs").set_defaults(fn=cmd_status)
    sub.add_parser("keep-status", help=argparse.SUPPRESS).set_defaults(fn=lambda _: keep_status())
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
