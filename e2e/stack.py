#!/usr/bin/env python3
"""The services a production ZenML stack needs beside the cluster: an object store and a server.

Why this exists: ZenML refuses a remote orchestrator or step operator without a remote ZenML
server, and the Kubernetes orchestrator refuses a local artifact store. So the local cluster
gets the real parts: SeaweedFS (S3 API, built from its Go module by ``e2e/build/build.sh``) and
a ZenML server started on its own, the way ZenML's server image starts it (``uvicorn
zenml.zen_server.zen_server_api:app``), with its own configuration directory and SQLite store.

Both listen on 127.0.0.1 only, on ports kept in the cluster's ``state.json``. Pods reach them by
Service name (``seaweedfs.k8sso-system.svc`` and ``zenml.k8sso-system.svc``) through the real
node's gateway (``e2e/realnode/network.py``); the host and the tests use the loopback ports.

What a client needs is written to ``<state>/stack/stack.json`` (mode 0600: it holds the API key
and the S3 secret)::

    {"zenml": {"url": "http://127.0.0.1:PORT", "pod_url": "http://zenml.k8sso-system.svc...",
               "api_key": "ZENKEY_...", "service_account": "k8sso-stack", ...},
     "s3": {"endpoint_url": "http://127.0.0.1:PORT", "pod_endpoint_url": "http://seaweedfs...",
            "bucket": "zenml", "aws_access_key_id": "...", "aws_secret_access_key": "...", ...}}

Usage::

    python e2e/stack.py up [--zenml-python PATH] [--only seaweedfs|zenml-server]
    python e2e/stack.py down | status | info
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "realnode"))

import cluster
import clusterkit as kit
import network
from clusterkit import LOOPBACK

log = kit.logger("stack")

STACK_DIR = cluster.STATE_DIR / "stack"
INFO_FILE = STACK_DIR / "stack.json"
SERVICES = ("seaweedfs", "zenml-server")
BUCKET = "zenml"
S3_REGION = "us-east-1"
SERVICE_ACCOUNT = "k8sso-stack"
ADMIN_USER = "admin"
# SeaweedFS's own listeners besides S3 (the S3 port is the cluster's `seaweedfs-s3`).
SEAWEEDFS_PORTS = (
    "seaweedfs-master",
    "seaweedfs-master-grpc",
    "seaweedfs-volume",
    "seaweedfs-volume-grpc",
    "seaweedfs-filer",
    "seaweedfs-filer-grpc",
    "seaweedfs-s3-grpc",
)
# ZenML's server, quiet and on its own: no analytics, no update or announcement checks.
ZENML_QUIET = {
    "ZENML_ANALYTICS_OPT_IN": "false",
    "ZENML_SERVER_DISPLAY_UPDATES": "false",
    "ZENML_SERVER_DISPLAY_ANNOUNCEMENTS": "false",
    "ZENML_ENABLE_RICH_TRACEBACK": "false",
    "ZENML_LOGGING_COLORS_DISABLED": "true",
    "ZENML_AUTO_OPEN_DASHBOARD": "false",
}
START_TIMEOUT_S = 180.0


# ---------------------------------------------------------------------------------------------
# Paths, ports, secrets


def weed_bin() -> Path:
    v = kit.versions()["SEAWEEDFS_VERSION"]
    return kit.cache_dir() / "bin" / f"seaweedfs-{v}" / "weed"


def ports(st: cluster.State) -> dict[str, int]:
    """The cluster's ports for the two services, and SeaweedFS's own (kept in stack/ports.json)."""
    f = STACK_DIR / "ports.json"
    have: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        have = {k: int(v) for k, v in json.loads(f.read_text()).items()}
    taken = {**st.ports, **have}
    p = kit.free_ports(SEAWEEDFS_PORTS, taken)
    own = {k: p[k] for k in SEAWEEDFS_PORTS}
    if own != have:
        STACK_DIR.mkdir(parents=True, exist_ok=True)
        kit.write_atomic(f, json.dumps(own, indent=2) + "\n")
    return {
        **own,
        "seaweedfs-s3": st.ports["seaweedfs-s3"],
        "zenml-server": st.ports["zenml-server"],
    }


def secret(name: str, make: Any = None) -> str:
    """A secret kept in ``stack/secrets/<name>`` (0600), made once."""
    path = STACK_DIR / "secrets" / name
    if not path.exists():
        value = make() if make else secrets.token_urlsafe(32)
        kit.write_private(path, value.encode())
    return path.read_text().strip()


def s3_credentials() -> tuple[str, str]:
    key = secret("s3-access-key", lambda: "K8SSO" + secrets.token_hex(8).upper())
    return key, secret("s3-secret-key")


def s3_config() -> dict[str, Any]:
    """SeaweedFS's identities (``-s3.config``): one, allowed everything, for the stack."""
    key, sec = s3_credentials()
    return {
        "identities": [
            {
                "name": "zenml",
                "credentials": [{"accessKey": key, "secretKey": sec}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


# ---------------------------------------------------------------------------------------------
# Processes


def _ours(name: str, pid: int) -> bool:
    cmd = kit.proc_cmdline(pid)
    # The instants before the command runs: the launcher's subshell (`sh -c LAUNCHER sh LOG
    # ARGV...`, see clusterkit.spawn) before it execs setsid, then setsid before it execs ARGV.
    if cmd[:2] == ["/bin/sh", "-c"] and len(cmd) > 5 and cmd[3] == "sh":
        cmd = cmd[5:]
    if cmd[:1] == ["setsid"]:
        cmd = cmd[1:]
    if not cmd:
        return False
    if name == "seaweedfs":
        return Path(cmd[0]).name == "weed" and any(str(STACK_DIR) in a for a in cmd)
    return "zenml.zen_server.zen_server_api:app" in cmd and kit.proc_has_env(
        pid, {"ZENML_CONFIG_PATH": str(STACK_DIR / "zenml" / "config")}
    )


def pid_of(st: cluster.State, name: str) -> int | None:
    pid = kit.read_pidfile(st.pidfile(name))
    if pid is not None and kit.proc_alive(pid) and _ours(name, pid):
        return pid
    for pid in kit.all_pids():
        if kit.proc_alive(pid) and _ours(name, pid):
            return pid
    return None


def seaweedfs_argv(p: Mapping[str, int]) -> list[str]:
    d = STACK_DIR / "seaweedfs"
    return [
        str(weed_bin()),
        "-logtostderr=true",
        "server",
        f"-dir={d / 'data'}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-master.port={p['seaweedfs-master']}",
        f"-master.port.grpc={p['seaweedfs-master-grpc']}",
        f"-master.dir={d / 'master'}",
        # One master: after a restart it waits out an election timeout (10 s) before it leads.
        "-master.electionTimeout=1s",
        # Small volumes: a test machine's disk, not a data centre's.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        f"-volume.port={p['seaweedfs-volume']}",
        f"-volume.port.grpc={p['seaweedfs-volume-grpc']}",
        # One volume server, nobody to hand over to: stop at once (default: wait 10 s).
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={p['seaweedfs-filer']}",
        f"-filer.port.grpc={p['seaweedfs-filer-grpc']}",
        f"-filer.localSocket={d / 'filer.sock'}",
        "-s3",
        f"-s3.port={p['seaweedfs-s3']}",
        f"-s3.port.grpc={p['seaweedfs-s3-grpc']}",
        f"-s3.localSocket={d / 's3.sock'}",
        # The Iceberg and Lance catalogs listen on fixed ports by default: off.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={d / 's3.json'}",
        "-s3.allowDeleteBucketNotEmpty=true",
    ]


def zenml_env(p: Mapping[str, int]) -> dict[str, str]:
    z = STACK_DIR / "zenml"
    return {
        **ZENML_QUIET,
        "ZENML_CONFIG_PATH": str(z / "config"),
        "ZENML_LOCAL_STORES_PATH": str(z / "local-stores"),
        "ZENML_STORE_URL": f"sqlite:///{z / 'zenml.db'}",
        # First start: the server activates itself with this admin account (not the default
        # empty password).
        "ZENML_SERVER_AUTO_ACTIVATE": "true",
        "ZENML_DEFAULT_USER_NAME": ADMIN_USER,
        "ZENML_DEFAULT_USER_PASSWORD": secret("zenml-admin-password"),
        # Tokens stay valid across restarts.
        "ZENML_SERVER_JWT_SECRET_KEY": secret("zenml-jwt-secret"),
        "ZENML_SERVER_SERVER_URL": f"http://{LOOPBACK}:{p['zenml-server']}",
    }


def zenml_argv(python: str, p: Mapping[str, int]) -> list[str]:
    return [
        python,
        "-m",
        "uvicorn",
        "zenml.zen_server.zen_server_api:app",
        "--host",
        LOOPBACK,
        "--port",
        str(p["zenml-server"]),
        "--no-server-header",
        "--log-level",
        "info",
    ]


def _spawn(st: cluster.State, name: str, argv: list[str], env: Mapping[str, str]) -> int:
    pid = kit.spawn(
        argv,
        logfile=st.logfile(name),
        pidfile=st.pidfile(name),
        cwd=STACK_DIR,
        env=dict(env),
    )
    log(f"started {name} (pid {pid})")
    return pid


def stop(st: cluster.State, name: str, grace: float = 10.0) -> bool:
    pid = pid_of(st, name)
    st.pidfile(name).unlink(missing_ok=True)
    if pid is None:
        return False
    kit.terminate(pid, grace, name=name, log=log)
    log(f"stopped {name} (pid {pid})")
    return True


# ---------------------------------------------------------------------------------------------
# Health and setup


def _http(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            code = int(r.status)
    except urllib.error.HTTPError as e:
        raw, code = e.read(), int(e.code)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return 0, str(e)
    try:
        return code, json.loads(raw) if raw else None
    except ValueError:
        return code, raw.decode(errors="replace")


def seaweedfs_healthy(p: Mapping[str, int]) -> bool:
    code, _ = _http("GET", f"http://{LOOPBACK}:{p['seaweedfs-s3']}/healthz", timeout=2)
    return code == 200


def _weed_shell(p: Mapping[str, int], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(weed_bin()),
            "shell",
            f"-master={LOOPBACK}:{p['seaweedfs-master']}.{p['seaweedfs-master-grpc']}",
            f"-filer={LOOPBACK}:{p['seaweedfs-filer']}.{p['seaweedfs-filer-grpc']}",
        ],
        input=command + "\nexit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ensure_bucket(p: Mapping[str, int]) -> None:
    """Create the artifact bucket unless it exists (``weed shell s3.bucket.create``)."""
    listed = _weed_shell(p, "s3.bucket.list")
    if any(line.split()[:1] == [BUCKET] for line in listed.stdout.splitlines()):
        return
    r = _weed_shell(p, f"s3.bucket.create -name {BUCKET}")
    if r.returncode != 0 or "error" in r.stdout.lower():
        raise SystemExit(f"creating bucket {BUCKET} failed: {r.stdout.strip()} {r.stderr.strip()}")
    log(f"created bucket {BUCKET}")


def zenml_healthy(p: Mapping[str, int]) -> bool:
    code, _ = _http("GET", f"http://{LOOPBACK}:{p['zenml-server']}/health", timeout=2)
    return code == 200


def zenml_login(p: Mapping[str, int], form: Mapping[str, str]) -> str:
    """An access token for a password or API-key login (``POST /api/v1/login``)."""
    code, body = _http(
        "POST",
        f"http://{LOOPBACK}:{p['zenml-server']}/api/v1/login",
        data=urllib.parse.urlencode(dict(form)).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if code != 200 or not isinstance(body, dict):
        raise SystemExit(f"ZenML login failed: HTTP {code}: {body}")
    return str(body["access_token"])


def _zenml_api(
    p: Mapping[str, int], token: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    return _http(
        method,
        f"http://{LOOPBACK}:{p['zenml-server']}/api/v1{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def api_key_works(p: Mapping[str, int], key: str) -> bool:
    try:
        zenml_login(p, {"grant_type": "zenml-api-key", "password": key})
    except SystemExit:
        return False
    return True


def ensure_service_account(p: Mapping[str, int], known_key: str | None) -> str:
    """The stack's service account and an API key for it (what `zenml service-account create`
    makes), through the server's REST API as the admin. A key that still works is kept."""
    if known_key and api_key_works(p, known_key):
        return known_key
    token = zenml_login(
        p,
        {
            "grant_type": "password",
            "username": ADMIN_USER,
            "password": secret("zenml-admin-password"),
        },
    )
    # Listed by name: a GET of a missing one makes the server log a traceback.
    code, found = _zenml_api(p, token, "GET", f"/service_accounts?name={SERVICE_ACCOUNT}")
    items = found.get("items") if code == 200 and isinstance(found, dict) else None
    if items is None:
        raise SystemExit(f"listing ZenML service accounts: HTTP {code}: {found}")
    sa: Any = items[0] if items else None
    if sa is None:
        code, sa = _zenml_api(
            p,
            token,
            "POST",
            "/service_accounts",
            {
                "name": SERVICE_ACCOUNT,
                "description": "The local cluster's ZenML stack (e2e/stack.py)",
                "active": True,
            },
        )
    if code not in (200, 201) or not isinstance(sa, dict):
        raise SystemExit(f"ZenML service account {SERVICE_ACCOUNT}: HTTP {code}: {sa}")
    name = f"stack-{time.strftime('%Y%m%d-%H%M%S')}"
    code, key = _zenml_api(
        p, token, "POST", f"/service_accounts/{sa['id']}/api_keys", {"name": name}
    )
    if code not in (200, 201) or not isinstance(key, dict):
        raise SystemExit(f"creating an API key for {SERVICE_ACCOUNT}: HTTP {code}: {key}")
    value = (key.get("body") or {}).get("key") or key.get("key")
    if not value:
        raise SystemExit(f"the server returned no API key value: {key}")
    log(f"created API key {name} for service account {SERVICE_ACCOUNT}")
    return str(value)


def read_info() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(INFO_FILE.read_text())
        return data
    except (OSError, ValueError):
        return {}


def write_info(info: Mapping[str, Any]) -> None:
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    tmp = INFO_FILE.with_name(INFO_FILE.name + ".tmp")
    kit.write_private(tmp, (json.dumps(info, indent=2) + "\n").encode())
    tmp.replace(INFO_FILE)


# ---------------------------------------------------------------------------------------------
# Commands


def up_seaweedfs(st: cluster.State, p: Mapping[str, int]) -> dict[str, Any]:
    if not weed_bin().exists():
        raise SystemExit(f"{weed_bin()} missing; run `bash e2e/build/build.sh seaweedfs`")
    d = STACK_DIR / "seaweedfs"
    for sub in ("data", "master"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    cfg = json.dumps(s3_config(), indent=2) + "\n"
    cfg_path = d / "s3.json"
    changed = not cfg_path.exists() or cfg_path.read_text() != cfg
    kit.write_private(cfg_path, cfg.encode())
    argv = seaweedfs_argv(p)
    pid = pid_of(st, "seaweedfs")
    if pid is not None and (changed or kit.proc_cmdline(pid) != argv):
        log("seaweedfs runs with other flags or credentials; restarting it")
        stop(st, "seaweedfs")
        pid = None
    if pid is None:
        pid = _spawn(st, "seaweedfs", argv, {})
    _wait_healthy(st, "seaweedfs", pid, lambda: seaweedfs_healthy(p))
    wait_for_bucket_api = time.monotonic() + 60
    while True:
        try:
            ensure_bucket(p)
            break
        except SystemExit:
            if time.monotonic() > wait_for_bucket_api:
                raise
            time.sleep(1)
    key, sec = s3_credentials()
    return {
        "endpoint_url": f"http://{LOOPBACK}:{p['seaweedfs-s3']}",
        "pod_endpoint_url": network.service_url("seaweedfs"),
        "bucket": BUCKET,
        "region": S3_REGION,
        "aws_access_key_id": key,
        "aws_secret_access_key": sec,
    }


def _wait_healthy(st: cluster.State, name: str, pid: int, check: Any) -> None:
    """Wait for ``check()``; stop early, with the log's tail, when process ``pid`` has exited.

    Whether the process lives is read from its pid alone: what it runs changes while it starts
    (the launcher's shell, ``setsid``, then the service), and is no sign of its end.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        gone = not kit.proc_alive(pid)
        if gone or time.monotonic() > deadline:
            tail = "\n".join(kit.tail(st.logfile(name), 20))
            what = "exited" if gone else f"is not healthy {START_TIMEOUT_S:.0f} s"
            raise SystemExit(
                f"{name} {what} after its start; {st.logfile(name)} ends with:\n{tail}"
            )
        time.sleep(0.5)


def up_zenml(st: cluster.State, p: Mapping[str, int], python: str) -> dict[str, Any]:
    # Absolute, but not resolved: the virtualenv's python is a link to the system's.
    python = os.path.abspath(python)
    probe = subprocess.run(
        [python, "-c", "import uvicorn, zenml.zen_server"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise SystemExit(
            f"{python} cannot import zenml's server (uvicorn, zenml.zen_server): run "
            "`make venv-zenml` or give --zenml-python"
        )
    z = STACK_DIR / "zenml"
    for sub in ("config", "local-stores"):
        (z / sub).mkdir(parents=True, exist_ok=True)
    argv = zenml_argv(python, p)
    env = zenml_env(p)
    pid = pid_of(st, "zenml-server")
    if pid is not None and (kit.proc_cmdline(pid) != argv or not kit.proc_has_env(pid, env)):
        log("zenml-server runs with other arguments; restarting it")
        stop(st, "zenml-server")
        pid = None
    if pid is None:
        pid = _spawn(st, "zenml-server", argv, env)
    _wait_healthy(st, "zenml-server", pid, lambda: zenml_healthy(p))
    known = (read_info().get("zenml") or {}).get("api_key")
    key = ensure_service_account(p, known)
    code, info = _http("GET", f"http://{LOOPBACK}:{p['zenml-server']}/api/v1/info")
    return {
        "url": f"http://{LOOPBACK}:{p['zenml-server']}",
        "pod_url": network.service_url("zenml"),
        "api_key": key,
        "service_account": SERVICE_ACCOUNT,
        "server_id": info.get("id") if code == 200 and isinstance(info, dict) else None,
        "version": info.get("version") if code == 200 and isinstance(info, dict) else None,
        "admin_user": ADMIN_USER,
        "admin_password_file": str(STACK_DIR / "secrets" / "zenml-admin-password"),
        "config_path": str(z / "config"),
    }


def default_zenml_python() -> str:
    env = os.environ.get("VENV_ZENML")
    if env:
        return str(Path(env) / "bin" / "python")
    return str(cluster.REPO / ".venv-zenml" / "bin" / "python")


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    st = cluster.State.load()
    if not cluster.healthy(st, "kube-apiserver"):
        raise SystemExit("the local cluster is not running; run `make cluster` first")
    p = ports(st)
    info = read_info()
    want = args.only or list(SERVICES)
    times = {}
    if "seaweedfs" in want:
        t = time.monotonic()
        info["s3"] = up_seaweedfs(st, p)
        times["seaweedfs"] = time.monotonic() - t
    if "zenml-server" in want:
        t = time.monotonic()
        info["zenml"] = up_zenml(st, p, args.zenml_python or default_zenml_python())
        times["zenml-server"] = time.monotonic() - t
    write_info(info)
    took = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    log(f"stack services up in {time.monotonic() - t0:.1f} s ({took}); clients: {INFO_FILE}")
    for k in ("s3", "zenml"):
        if k in info:
            host = info[k].get("endpoint_url") or info[k].get("url")
            pod = info[k].get("pod_endpoint_url") or info[k].get("pod_url")
            print(f"{k}: {host} (host), {pod} (pods)")
    return 0


# `weed server` also serves each gRPC port on a Unix socket with a fixed /tmp path, named after
# the port (not configurable in 4.53); `down` removes ours.
GRPC_SOCKETS = {
    "master": "seaweedfs-master-grpc",
    "volume": "seaweedfs-volume-grpc",
    "filer": "seaweedfs-filer-grpc",
    "s3": "seaweedfs-s3-grpc",
}


def grpc_sockets() -> list[Path]:
    try:
        own = {k: int(v) for k, v in json.loads((STACK_DIR / "ports.json").read_text()).items()}
    except (OSError, ValueError):
        return []
    return [
        Path(f"/tmp/seaweedfs-{svc}-grpc-{own[name]}.sock")
        for svc, name in GRPC_SOCKETS.items()
        if name in own
    ]


def stale_grpc_sockets() -> list[Path]:
    """SeaweedFS's /tmp sockets that nothing listens on any more.

    A SeaweedFS stopped with other ports than ``ports.json`` now names (its ports were chosen
    again) leaves sockets ``grpc_sockets()`` does not know of. A socket whose connect is refused
    has no server; one that answers belongs to a running SeaweedFS (another cluster's) and stays.
    """
    stale = []
    for path in sorted(Path("/tmp").glob("seaweedfs-*-grpc-*.sock")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            try:
                s.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                stale.append(path)
            except OSError:
                pass  # busy or slow: a server may be there
    return stale


def down(st: cluster.State) -> list[str]:
    """Stop both services; what is still running afterwards."""
    for name in reversed(SERVICES):
        stop(st, name)
    running = [n for n in SERVICES if pid_of(st, n) is not None]
    if "seaweedfs" not in running:
        for sock in {*grpc_sockets(), *stale_grpc_sockets()}:
            sock.unlink(missing_ok=True)
    return running


def cmd_down(args: argparse.Namespace) -> int:
    if not (cluster.STATE_DIR / "state.json").exists():
        log("nothing to stop: no cluster state")
        return 0
    left = down(cluster.State.load())
    if left:
        raise SystemExit(f"still running after down: {', '.join(left)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = cluster.State.load()
    p = ports(st)
    ok = True
    for name, check, port in (
        ("seaweedfs", seaweedfs_healthy, p["seaweedfs-s3"]),
        ("zenml-server", zenml_healthy, p["zenml-server"]),
    ):
        pid = pid_of(st, name)
        h = pid is not None and check(p)
        ok &= h
        state = "healthy" if h else ("unhealthy" if pid else "stopped")
        print(f"{name:25} {state:10} pid={pid or '-':<8} {LOOPBACK}:{port}")
    print(f"clients: {INFO_FILE}")
    return 0 if ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    info = read_info()
    if not info:
        print(f"no stack services: {INFO_FILE} is missing (run `make stack-services`)")
        return 1
    print(json.dumps(info, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start SeaweedFS and the ZenML server (idempotent)")
    up.add_argument("--zenml-python", help="the ZenML environment's python (default: $VENV_ZENML)")
    up.add_argument("--only", action="append", choices=SERVICES)
    up.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop both").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="processes and health").set_defaults(fn=cmd_status)
    sub.add_parser("info", help="print what clients need (stack.json)").set_defaults(fn=cmd_info)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
