"""The real node's pod network, with real containers: the API server, pods and Services by name.

What a production cluster gives every pod, checked from inside pods on the real node
(``e2e/realnode/network.py``): in-cluster configuration through the ``kubernetes`` Service,
cluster DNS (short names through the search path, headless Services, ``<hostname>.<subdomain>``
of an Indexed Job's pods), Services through kube-proxy, the object store and the ZenML server by
Service name, and nothing at all beyond the pod network: a connect to any other address fails at
once inside the pod.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.realnode import s3v4
from tests.realnode.pods import (
    PYTHON_IMAGE,
    container,
    create_pod,
    pod_spec,
    terminated,
    wait_until,
)

pytestmark = pytest.mark.realnode

GATEWAY = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"


def _last_json(logs: str) -> Any:
    return json.loads(logs.strip().splitlines()[-1])


def run_python(core: Any, ns: str, name: str, code: str, **spec: Any) -> Any:
    """Run ``code`` in a pod of the Python image; its last log line, parsed as JSON."""
    podspec = pod_spec(container(PYTHON_IMAGE, ["python", "-c", code]))
    podspec.update(spec)
    create_pod(core, ns, name, podspec)
    _, state = terminated(core, ns, name)
    logs = core.read_namespaced_pod_log(name, ns)
    assert state.exit_code == 0, f"pod {name} exited {state.exit_code}:\n{logs}"
    return _last_json(logs)


def test_a_pod_lists_pods_through_in_cluster_configuration(
    api_client: Any, core: Any, restricted_ns: str
) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        restricted_ns,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        restricted_ns,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": restricted_ns}],
        },
    )
    code = (
        "import json, os\n"
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
        "pods = client.CoreV1Api().list_namespaced_pod(ns).items\n"
        "print(json.dumps({'host': os.environ['KUBERNETES_SERVICE_HOST'],\n"
        "  'port': os.environ['KUBERNETES_SERVICE_PORT'],\n"
        "  'version': client.VersionApi().get_code().git_version,\n"
        "  'pods': sorted(p.metadata.name for p in pods)}))\n"
    )
    out = run_python(core, restricted_ns, "incluster", code, automountServiceAccountToken=True)
    kubernetes_svc = core.read_namespaced_service("kubernetes", "default")
    assert out["host"] == kubernetes_svc.spec.cluster_ip
    assert out["port"] == "443"
    assert out["version"].startswith("v1.")
    assert "incluster" in out["pods"]


def test_the_kubernetes_service_points_at_the_gateway(api_client: Any) -> None:
    from kubernetes import client

    disc = client.DiscoveryV1Api(api_client)
    slices = disc.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    ).items
    addresses = {a for s in slices for e in s.endpoints or [] for a in e.addresses}
    assert addresses == {GATEWAY}


RANKS_CODE = """
import json, os, socket, time
ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()
index = int(os.environ['JOB_COMPLETION_INDEX'])
if index == 0:
    srv = socket.create_server(('0.0.0.0', 29500))
    srv.settimeout(120)
    peers = []
    for _ in range(2):
        conn, peer = srv.accept()
        conn.sendall(b'pong:' + conn.recv(64))
        conn.close()
        peers.append(peer[0])
    print(json.dumps({'rank': 0, 'peers': peers}))
else:
    def dial(name):
        deadline = time.monotonic() + 90
        while True:
            try:
                c = socket.create_connection((name, 29500), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        c.sendall(name.encode())
        reply = c.recv(64).decode()
        c.close()
        return reply
    by_hostname = dial('ranks-0.ranks')
    by_service = dial('rank0')
    print(json.dumps({
        'rank': 1,
        'replies': [by_hostname, by_service],
        'rank0': socket.gethostbyname('ranks-0.ranks.' + ns + '.svc.cluster.local'),
        'headless': sorted(socket.gethostbyname_ex('ranks.' + ns + '.svc')[2]),
        'rank0_service': socket.gethostbyname('rank0'),
        'me': socket.gethostbyname(socket.gethostname()),
    }))
"""


def test_indexed_job_ranks_find_rank_zero_by_name(
    core: Any, batch: Any, restricted_ns: str
) -> None:
    """The multi-node shape: an Indexed Job whose pods' subdomain is a headless Service."""
    ns = restricted_ns
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "ranks"},
            "spec": {
                "clusterIP": "None",
                "selector": {"job-name": "ranks"},
                "publishNotReadyAddresses": True,
                "ports": [{"name": "rendezvous", "port": 29500}],
            },
        },
    )
    # And a plain ClusterIP Service for rank 0 only: pod to Service to pod through kube-proxy.
    core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "rank0"},
            "spec": {
                "selector": {
                    "job-name": "ranks",
                    "batch.kubernetes.io/job-completion-index": "0",
                },
                "ports": [{"name": "rendezvous", "port": 29500}],
            },
        },
    )
    spec = pod_spec(container(PYTHON_IMAGE, ["python", "-c", RANKS_CODE]))
    spec["automountServiceAccountToken"] = True
    spec["subdomain"] = "ranks"
    batch.create_namespaced_job(
        ns,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "ranks"},
            "spec": {
                "completionMode": "Indexed",
                "completions": 2,
                "parallelism": 2,
                "backoffLimit": 0,
                "template": {"metadata": {}, "spec": spec},
            },
        },
    )

    def done() -> Any:
        st = batch.read_namespaced_job_status("ranks", ns).status
        if st.failed:
            logs = {
                p.metadata.name: core.read_namespaced_pod_log(p.metadata.name, ns)
                for p in core.list_namespaced_pod(ns, label_selector="job-name=ranks").items
            }
            raise AssertionError(f"the ranks Job failed: {st}\n{logs}")
        return st.succeeded == 2

    wait_until("both ranks to succeed", done, timeout=180)
    pods = core.list_namespaced_pod(ns, label_selector="job-name=ranks").items
    by_index = {
        int(p.metadata.annotations["batch.kubernetes.io/job-completion-index"]): p for p in pods
    }
    ip0, ip1 = by_index[0].status.pod_ip, by_index[1].status.pod_ip
    out0 = _last_json(core.read_namespaced_pod_log(by_index[0].metadata.name, ns))
    out1 = _last_json(core.read_namespaced_pod_log(by_index[1].metadata.name, ns))
    assert by_index[0].spec.hostname == "ranks-0"
    assert out1["replies"] == ["pong:ranks-0.ranks", "pong:rank0"]
    assert out1["rank0"] == ip0
    assert out1["headless"] == sorted([ip0, ip1])
    rank0_svc = core.read_namespaced_service("rank0", ns).spec.cluster_ip
    assert out1["rank0_service"] == rank0_svc
    assert out1["me"] == ip1
    # Both connections come straight from rank 1: no NAT between pods, also through a Service.
    assert out0["peers"] == [ip1, ip1]
    import ipaddress

    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR) for ip in (ip0, ip1))


OUTSIDE_CODE = """
import errno, json, socket, sys, time
targets = json.loads(sys.argv[1])
out = {}
for name, (family, host, port) in targets.items():
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, port))
        result = 'connected'
    except OSError as e:
        result = errno.errorcode.get(e.errno, str(e)) if e.errno else str(e)
    out[name] = [result, round(time.monotonic() - t, 3)]
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t = time.monotonic()
try:
    u.sendto(b'x', ('192.0.2.1', 53))
    out['udp-outside'] = ['sent', 0]
except OSError as e:
    out['udp-outside'] = [errno.errorcode.get(e.errno, str(e)), round(time.monotonic() - t, 3)]
t = time.monotonic()
try:
    socket.getaddrinfo('pypi.org', 443)
    out['dns-outside'] = ['resolved', 0]
except socket.gaierror as e:
    out['dns-outside'] = [str(e.args[0]), round(time.monotonic() - t, 3)]
print(json.dumps(out))
"""


def test_nothing_beyond_the_pod_network_is_reachable(core: Any, restricted_ns: str) -> None:
    # A listener on the gateway that no Service publishes: the guard must refuse pods before it
    # (it is bound to the bridge's address only, never to the machine's network).
    listener = socket.create_server((GATEWAY, 0))
    listener.settimeout(0.2)
    unpublished = listener.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[1])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    targets = {
        # The default route of the machine, the machine's own address, public addresses: no
        # route in the pod at all.
        "default-gateway": [4, "192.0.2.1", 80],
        "machine-address": [4, "192.0.2.2", 22],
        "public": [4, "1.1.1.1", 443],
        "public-v6": [6, "2001:db8::1", 443],
        # Another block of the pod range: only the node's /24 is routed.
        "other-pod-block": [4, "10.244.1.1", 80],
        # A Service address nothing serves: the host's unreachable route answers.
        "unused-service-ip": [4, "10.96.255.254", 80],
        "unpublished-gateway-port": [4, GATEWAY, unpublished],
    }
    code = OUTSIDE_CODE
    podspec = pod_spec(
        container(PYTHON_IMAGE, ["python", "-c", code, json.dumps(targets)], memory="64Mi")
    )
    try:
        create_pod(core, restricted_ns, "outside", podspec)
        _, state = terminated(core, restricted_ns, "outside")
        logs = core.read_namespaced_pod_log("outside", restricted_ns)
        assert state.exit_code == 0, logs
        out = _last_json(logs)
    finally:
        stop.set()
        listener.close()
        t.join(5)
    expected = {
        "default-gateway": "ENETUNREACH",
        "machine-address": "ENETUNREACH",
        "public": "ENETUNREACH",
        "public-v6": "ENETUNREACH",
        "other-pod-block": "ENETUNREACH",
        "unused-service-ip": "EHOSTUNREACH",
        "unpublished-gateway-port": "ECONNREFUSED",
        "udp-outside": "ENETUNREACH",
    }
    for name, want in expected.items():
        result, seconds = out[name]
        assert (result, name) == (want, name), out
        assert seconds < 1.5, (name, out)
    # No resolver beyond the cluster's: the name is refused, quickly.
    assert out["dns-outside"][0] != "resolved" and out["dns-outside"][1] < 3, out
    assert accepted == [], "the guard let a pod through to an unpublished gateway port"


def test_a_pod_puts_and_gets_an_object_by_service_name(
    core: Any, restricted_ns: str, stack_info: dict[str, Any]
) -> None:
    s3 = stack_info["s3"]
    key = f"tests/{restricted_ns}/{uuid.uuid4().hex}.txt"
    body = f"written by a pod in {restricted_ns}"
    args = [s3["pod_endpoint_url"], s3["aws_access_key_id"], s3["aws_secret_access_key"]]
    args.append(s3["region"])
    code = (
        Path(s3v4.__file__).read_text()
        + f"""
import json
args = {json.dumps(args)}
path = {json.dumps("/" + s3["bucket"] + "/" + key)}
put = s3_request(*args, "PUT", path, {body!r}.encode())
got = s3_request(*args, "GET", path)
print(json.dumps({{"put": put[0], "get": got[0], "body": got[1].decode()}}))
"""
    )
    out = run_python(core, restricted_ns, "s3", code)
    assert out == {"put": 200, "get": 200, "body": body}
    # The host sees the same object through its loopback endpoint.
    args = (s3["endpoint_url"], s3["aws_access_key_id"], s3["aws_secret_access_key"], s3["region"])
    status, data = s3v4.s3_request(*args, "GET", f"/{s3['bucket']}/{key}")
    assert (status, data.decode()) == (200, body)
    assert s3v4.s3_request(*args, "DELETE", f"/{s3['bucket']}/{key}")[0] == 204


def test_a_pod_reaches_the_zenml_server_by_service_name(
    core: Any, restricted_ns: str, stack_info: dict[str, Any]
) -> None:
    import urllib.request

    z = stack_info["zenml"]
    code = f"""
import json, urllib.request
base = {z["pod_url"]!r}
health = urllib.request.urlopen(base + '/health', timeout=20).read().decode()
info = json.loads(urllib.request.urlopen(base + '/api/v1/info', timeout=20).read())
print(json.dumps({{'health': health, 'id': info['id'], 'version': info['version']}}))
"""
    out = run_python(core, restricted_ns, "zenml", code)
    with urllib.request.urlopen(z["url"] + "/api/v1/info", timeout=20) as r:
        host_info = json.loads(r.read())
    assert out["health"] == "ok"
    assert out["id"] == host_info["id"]
    assert out["version"].startswith("0.98")


STEP_FROM_POD = """
import os, subprocess, sys, yaml
settings = {
    'image_pull_policy': 'Never',
    'node_selector': {'k8s-step-operator.io/real-node': 'true'},
    'tolerations': [
        {'key': 'k8s-step-operator.io/real-node', 'operator': 'Exists', 'effect': 'NoSchedule'},
        {'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'},
    ],
    'pending_timeout': 120,
}
with open('/tmp/settings.yaml', 'w') as f:
    yaml.safe_dump(settings, f)
cmd = [sys.executable, '-m', 'k8s_step_operator.cli', 'run', '--in-cluster',
       '--settings', '/tmp/settings.yaml', '--image', sys.argv[1], '--step-name', 'inner',
       '--', 'sh', '-c', 'echo inner step says hello']
sys.exit(subprocess.run(cmd).returncode)
"""


def test_a_pod_launches_a_step_through_in_cluster_configuration(
    api_client: Any, core: Any, namespace: str
) -> None:
    """The orchestrator pod's case: the library finds in-cluster configuration by itself and runs
    a step as a Job from inside a pod (here with the `edit` role, as ZenML's default gives)."""
    from kubernetes import client

    from tests.realnode.pods import SHELL_IMAGE

    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "launcher-edit"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    spec = pod_spec(container(PYTHON_IMAGE, ["python", "-c", STEP_FROM_POD, SHELL_IMAGE]))
    spec["automountServiceAccountToken"] = True
    create_pod(core, namespace, "launcher", spec)
    _, state = terminated(core, namespace, "launcher")
    logs = core.read_namespaced_pod_log("launcher", namespace)
    assert state.exit_code == 0, logs
    assert "inner step says hello" in logs


def test_the_host_keeps_both_ranges_off_its_default_route() -> None:
    """Last in this file: the guards' counters cover every pod above."""
    routes = json.loads(
        subprocess.run(
            ["ip", "-4", "-j", "route", "show", "type", "unreachable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {r["dst"] for r in routes} >= {"10.244.0.0/16", SERVICE_CIDR}
    forward = subprocess.run(
        ["iptables", "-w", "5", "-t", "mangle", "-S", "FORWARD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "-j K8SSO-POD-FORWARD" in forward[1], forward
    # The egress guard drops any packet of either range that would leave by another interface
    # than the bridge or loopback; after every test above, it has dropped nothing.
    for chain in ("K8SSO-POD-FORWARD", "K8SSO-POD-EGRESS"):
        listing = subprocess.run(
            ["iptables", "-w", "5", "-t", "mangle", "-L", chain, "-v", "-n", "-x"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[2:]
        drops = [line for line in listing if " DROP " in f" {line} "]
        assert drops and all(int(line.split()[0]) == 0 for line in drops), listing
    # Forwarding is on for the bridge only; the machine's own interfaces stay as they were.
    assert Path("/proc/sys/net/ipv4/conf/k8sso0/forwarding").read_text().strip() == "1"
    assert Path("/proc/sys/net/ipv4/conf/all/route_localnet").read_text().strip() == "0"
