"""Building blocks shared by the local cluster (``cluster.py``) and its real node (``node.py``).

Why one module: both scripts start long-running processes that must outlive them, find them
again by pid file (guarding against pid reuse), stop them with TERM then KILL, wait for health
checks, issue certificates from the cluster's CA and talk to the API server with a client
certificate. Doing each of these in one place keeps the two scripts' behaviour identical.

Nothing here knows the cluster's layout (ports, component names, directories): callers pass
paths and addresses in. Only the standard library and ``cryptography`` / ``PyYAML`` are used, so
the module runs under any interpreter that has the project's dev dependencies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

LOOPBACK = "127.0.0.1"
E2E = Path(__file__).resolve().parent
VERSIONS_FILE = E2E / "build" / "versions.env"

# ---------------------------------------------------------------------------------------------
# Logging


def logger(prefix: str) -> Callable[[str], None]:
    """A ``log(msg)`` that writes ``[prefix] msg`` to stderr at once."""

    def log(msg: str) -> None:
        print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------------------------
# Waiting


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.2) -> None:
    """Poll ``check`` until it returns something true; ``SystemExit`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Versions and the binary cache


def versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The pins of ``e2e/build/versions.env`` (``KEY=value`` lines)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def cache_dir() -> Path:
    """Where ``e2e/build/build.sh`` keeps what it builds (``$K8SSO_CACHE``)."""
    return Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))


# ---------------------------------------------------------------------------------------------
# Ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_ports(names: Sequence[str], taken: Mapping[str, int] | None = None) -> dict[str, int]:
    """``taken`` plus a distinct free port for every name of ``names`` it does not have."""
    ports = dict(taken or {})
    used = set(ports.values())
    for n in names:
        if n not in ports:
            p = free_port()
            while p in used:
                p = free_port()
            ports[n] = p
            used.add(p)
    return ports


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Processes


def _task_state(stat_file: Path) -> str:
    return stat_file.read_text().rsplit(")", 1)[1].split()[0]


def proc_alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie.

    A killed multi-threaded process shows its main thread as a zombie while its other threads
    are still exiting; until the last one is gone its files (listening sockets) stay open, so
    it counts as alive until then. A thread that exits while ``/proc/PID/task`` is being read
    is skipped: only a missing ``/proc/PID`` means the process is gone.
    """
    try:
        if _task_state(Path(f"/proc/{pid}/stat")) not in ("Z", "X"):
            return True
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return Path(f"/proc/{pid}").exists()
    for t in tasks:
        try:
            if _task_state(t / "stat") not in ("Z", "X"):
                return True
        except OSError:
            continue  # that thread has just gone; the others decide
    # Every thread is a zombie or gone: the process still holds its pid until it is reaped,
    # but it runs no code and its files are closed.
    return False


# How long a process may show no command line while it execs (seen: 0.2 ms idle, longer when a
# large binary execs on a loaded machine).
EXEC_WINDOW_S = 2.0


def proc_cmdline(pid: int) -> list[str]:
    """The command line of ``pid``; empty when it is gone (or a kernel thread).

    A process in the middle of ``execve`` shows an empty command line for an instant (its new
    memory has no arguments yet) while ``/proc/PID/exe`` already names the new program: that
    instant is waited out, so a component caught while ``setsid`` execs it is not taken for gone.
    """
    deadline = time.monotonic() + EXEC_WINDOW_S
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        if raw or time.monotonic() > deadline:
            break
        try:
            os.readlink(f"/proc/{pid}/exe")  # a zombie or a kernel thread has none
        except OSError:
            return []
        time.sleep(0.002)
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_has_env(pid: int, want: Mapping[str, str]) -> bool:
    """Whether ``pid`` was started with every variable of ``want`` set to its value."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    env = dict(e.decode(errors="replace").split("=", 1) for e in raw.split(b"\0") if b"=" in e)
    return all(env.get(k) == v for k, v in want.items())


def all_pids() -> Iterator[int]:
    """Every pid in /proc but this process's own."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != me:
            yield int(proc.name)


def read_pidfile(pidfile: Path) -> int | None:
    """The pid written in ``pidfile``, if it holds one."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(
    argv: Sequence[str],
    *,
    logfile: Path,
    pidfile: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` detached (setsid), output appended to ``logfile``; return its pid.

    The process is started through a shell that exits at once, so it is nobody's child: it
    outlives the caller (a test run, or a script) and init reaps it. ``setsid`` execs the
    command in place, so the pid written to ``pidfile`` is the command's own.
    """
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as f:
        f.write(f"\n==== {dt.datetime.now(dt.UTC).isoformat()} start\n".encode())
    launcher = 'log=$1; shift; setsid "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", launcher, "sh", str(logfile), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={**os.environ, **env} if env else None,
    )
    pid = int(out.stdout.strip())
    pidfile.write_text(f"{pid}\n")
    return pid


# How long a killed process may take to be gone: a loaded machine needs seconds to tear down
# a process with hundreds of threads (the API server), and longer when it is swapping.
KILL_WAIT_S = 60.0


def terminate(
    pid: int,
    grace: float,
    *,
    name: str,
    log: Callable[[str], None],
    kill_wait: float = KILL_WAIT_S,
) -> None:
    """TERM, then KILL after ``grace`` seconds; wait until it is really gone.

    Raises:
        SystemExit: It is still there ``kill_wait`` seconds after SIGKILL (saying so).
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and proc_alive(pid):
        time.sleep(0.05)
    if not proc_alive(pid):
        return
    log(f"{name} (pid {pid}) ignored SIGTERM for {grace:.0f} s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    while proc_alive(pid):
        if time.monotonic() - start > kill_wait:
            raise SystemExit(
                f"{name} (pid {pid}) is still running {kill_wait:.0f} s after SIGKILL "
                f"(state {_state_or_gone(pid)}); it cannot be restarted until it is gone"
            )
        time.sleep(0.05)
    log(f"{name} (pid {pid}) gone {time.monotonic() - start:.1f} s after SIGKILL")


def _state_or_gone(pid: int) -> str:
    try:
        return _task_state(Path(f"/proc/{pid}/stat"))
    except OSError:
        return "gone"


def kill_now(pid: int) -> None:
    """SIGKILL, ignoring a process that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Files


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (none when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` whole, so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Certificates


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def _name(cn: str, org: str | None = None) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _not_before() -> dt.datetime:
    # Five minutes of slack for clocks that differ a little between processes.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


CERT_DAYS = 3650


class CertAuthority:
    """The cluster's CA (``ca.crt`` / ``ca.key`` in one directory) and what it signs."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.dir / "ca.key"

    def exists(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def create(self, cn: str) -> None:
        """A new self-signed EC P-256 CA, valid ten years."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        now = _not_before()
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(cn)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.key_path, _pem_key(key))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        out_dir: Path,
        file: str,
        cn: str,
        org: str | None = None,
        *,
        server: bool = False,
        client: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> None:
        """Sign a new EC key pair: ``<out_dir>/<file>.crt`` and ``<file>.key``."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID

        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key_path.read_bytes(), None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise SystemExit(f"{self.key_path}: expected an EC private key")
        now = _not_before()
        key = ec.generate_private_key(ec.SECP256R1())
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, org))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        write_private(out_dir / f"{file}.key", _pem_key(key))
        (out_dir / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def signed(self, cert_path: Path) -> bool:
        """Whether ``cert_path`` exists and was issued by this CA (not by an older one)."""
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature

        if not cert_path.exists():
            return False
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        ca = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def make_rsa_key_pair(private: Path, public: Path) -> None:
    """An RSA 2048 key pair in PEM (service-account token signing)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(private, _pem_key(key))
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    cert: Path,
    key: Path,
    user: str,
    cluster_name: str,
) -> None:
    """A kubeconfig with one cluster, one client-certificate user and one context."""
    import yaml

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    write_atomic(path, yaml.safe_dump(cfg, sort_keys=False))


# ---------------------------------------------------------------------------------------------
# HTTP and the API server


def tls_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca`` (or nothing is verified when ``ca`` is None).

    Unverified contexts are for the health endpoints of the controller manager and the
    scheduler, which serve self-signed certificates.
    """
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
    else:
        ctx = ssl._create_unverified_context()
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def http_get(
    url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """GET ``url``: the status and body, or ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


class RestClient:
    """The few REST calls the scripts need, over a client certificate.

    ``request`` never raises for HTTP or connection errors: it returns ``(status, body)``, with
    status 0 and the error text when the server could not be reached. Bodies are decoded JSON
    when they parse, else text.
    """

    def __init__(self, base: str, ctx: ssl.SSLContext, timeout: float = 10.0) -> None:
        self.base = base
        self.ctx = ctx
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=self.timeout) as r:
                raw = r.read()
                return int(r.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return int(e.code), json.loads(raw)
            except ValueError:
                return int(e.code), raw.decode(errors="replace")
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            return 0, str(e)
