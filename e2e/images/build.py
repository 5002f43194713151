#!/usr/bin/env python3
"""Step images built on this machine, with no registry and no container engine.

Why this exists: the real node (``e2e/realnode/node.py``) runs containers with containerd, but
nothing here can pull an image. Each image is a root filesystem packed as a one-layer OCI image
tarball (layer, config, manifest, ``index.json``, ``oci-layout``) and imported with
``ctr -n k8s.io images import``:

* ``pause``  - the pod sandbox: a static ``/pause`` compiled from the C source below.
* ``shell``  - busybox-static with its applets linked into ``/bin``.
* ``python`` - ``debootstrap --variant=minbase --include=python3 bookworm`` plus this project's
  dependencies from PyPI (Debian's python3 is 3.11, the wheels match) in one layer, and the
  project's wheel plus the pipeline code of ``examples/`` (under ``/app``, on ``PYTHONPATH``) in
  a small second one.
* ``zenml`` - the same rootfs with ZenML (``zenml[local]``, the project's ``zenml`` extra), the
  requirements of ZenML's ``kubernetes`` and ``s3`` integrations (what its orchestrator pods
  and an S3 artifact store need) and the project's dependencies resolved together,
  byte-compiled, in one layer; the project's wheel and an ``/app`` any UID may write (ZenML's
  entrypoints work there) in a second one. One image for ZenML's orchestrator pods, its step
  pods and our step Jobs. Built on request only (``make demo-zenml``, ``make test``), never by
  ``make demo``.
* ``torch`` - the ``zenml`` image on a rootfs that also has Debian's ``python3-torch`` (CPU,
  gloo, ``torch.distributed``; no CUDA wheels), with the pipeline code of ``python``: the
  steps on several nodes that run a real all-reduce, as commands and as ZenML steps. Built on
  request only (``make test``).

Every image is named by a hash of what goes into it (``k8s-step-operator/python:<hash>``), so a
change to the project's sources gives a new tag and an unchanged tree reuses the cached tarball
under ``~/.cache/k8s-step-operator/images/``. A stable alias (``localhost/k8s-step-operator-
python:dev``) points at the newest build for tests. Pods use ``imagePullPolicy: Never`` or
``IfNotPresent``; the tags are never ``latest``.

Usage::

    python e2e/images/build.py build [pause|shell|python|zenml ...]  # tarballs only, prints names
    python e2e/images/build.py import --address SOCK [names ...]   # build if needed, then import
    python e2e/images/build.py names                               # JSON: image -> references
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = (
    Path(os.environ.get("K8SSO_CACHE", str(Path.home() / ".cache" / "k8s-step-operator")))
    / "images"
)
SUITE = "bookworm"
# The uid step pods run as (Pod Security "restricted" needs a non-root uid).
STEP_UID = 1000
PY_SITE = "usr/local/lib/python3.11/dist-packages"
# Bump to force every image to be rebuilt when the packing below changes.
FORMAT_VERSION = "1"
# Bump when python_base_layer() changes what goes into the Python image's base layer.
BASE_VERSION = "2"

PAUSE_C = r"""
/* Holds the pod's namespaces open; reaps orphans when the pod shares its process namespace. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  struct sigaction term = {0}, child = {0};
  term.sa_handler = on_term;
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    return 1;
  }
  for (;;) pause();
}
"""

ETC_PASSWD_EXTRA = f"step:x:{STEP_UID}:{STEP_UID}:step:/tmp:/bin/sh\n"
ETC_GROUP_EXTRA = f"step:x:{STEP_UID}:\n"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    """One built image: its tarball and the references it is imported under."""

    kind: str
    content_hash: str
    tarball: Path

    @property
    def ref(self) -> str:
        """The content-addressed reference, fully qualified as containerd stores it."""
        if self.kind == "pause":
            return f"localhost/k8s-step-operator-pause:{self.content_hash}"
        return f"docker.io/k8s-step-operator/{self.kind}:{self.content_hash}"

    @property
    def alias(self) -> str:
        """The stable reference tests use; moves to the newest build."""
        return f"localhost/k8s-step-operator-{self.kind}:dev"


# ---------------------------------------------------------------------------------------------
# Hashing


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_parts(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()[:16]


# The pipeline code shipped with the project (the demo's steps), importable in the image from
# /app the way a pipeline framework bakes its users' source root into their step images.
SOURCE_ROOT = "app"
# Packages, or single modules: the end-to-end tests' step functions are importable in the image
# as tests.realnode.real_steps (implicit namespace packages), as they are from the checkout.
SOURCE_PACKAGES = ("examples", "tests/realnode/real_steps.py", "tests/realnode/torch_steps.py")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for pkg in SOURCE_PACKAGES:
        if (REPO / pkg).is_dir():
            files += sorted(p for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)
        elif (REPO / pkg).is_file():
            files.append(REPO / pkg)
    return files


def project_sources_hash() -> str:
    """Hash of everything in the image's top layer: the project's wheel and the pipeline code."""
    files = [REPO / "pyproject.toml"]
    files += sorted(
        p
        for p in (REPO / "k8s_step_operator").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    files += _source_files()
    parts: list[str | bytes] = []
    for f in files:
        parts += [str(f.relative_to(REPO)), f.read_bytes()]
    return _hash_parts(*parts)


def _script_hash() -> str:
    return _hash_parts(Path(__file__).read_bytes())


# ---------------------------------------------------------------------------------------------
# OCI packing


def _tarinfo_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    return ti


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    tar.addfile(_tarinfo_root(ti), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    tar.addfile(_tarinfo_root(ti))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    ti.mode = 0o777
    tar.addfile(_tarinfo_root(ti))


def pack_oci(
    layers: Sequence[Path],
    out: Path,
    *,
    ref: str,
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    env: Sequence[str],
) -> None:
    """Write an OCI image-layout tarball with the given uncompressed layers to ``out``."""
    digests = [_sha256_file(layer) for layer in layers]
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": list(env),
            "WorkingDir": "/",
            **({"Entrypoint": list(entrypoint)} if entrypoint else {}),
            **({"Cmd": list(cmd)} if cmd else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in digests]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "e2e/images/build.py"} for _ in layers
        ],
    }
    config_b = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{hashlib.sha256(config_b).hexdigest()}",
            "size": len(config_b),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{d}",
                "size": layer.stat().st_size,
            }
            for d, layer in zip(digests, layers, strict=True)
        ],
    }
    manifest_b = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{hashlib.sha256(manifest_b).hexdigest()}",
                "size": len(manifest_b),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(config_b).hexdigest()}", config_b)
        _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(manifest_b).hexdigest()}", manifest_b)
        for digest, layer in zip(digests, layers, strict=True):
            ti = _tarinfo_root(tar.gettarinfo(str(layer), f"blobs/sha256/{digest}"))
            ti.mode = 0o644
            with open(layer, "rb") as f:
                tar.addfile(ti, f)
        _add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
    tmp.replace(out)


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=CACHE))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run(argv: Sequence[str], **kw: object) -> None:
    log("$ " + " ".join(argv))
    subprocess.run(list(argv), check=True, **kw)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# The images

ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_pause() -> Image:
    h = _hash_parts(FORMAT_VERSION, PAUSE_C, "pause")
    img = Image("pause", h, CACHE / f"pause-{h}.oci.tar")
    if img.tarball.exists():
        return img
    t0 = time.monotonic()
    with _workdir("pause-") as d:
        (d / "pause.c").write_text(PAUSE_C)
        _run(["cc", "-static", "-O2", "-s", "-o", str(d / "pause"), str(d / "pause.c")])
        layer = d / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "pause", (d / "pause").read_bytes(), 0o755)
        pack_oci([layer], img.tarball, ref=img.ref, entrypoint=["/pause"], cmd=None, env=[ENV_PATH])
    log(f"built {img.ref} in {time.monotonic() - t0:.1f} s")
    return img


def _busybox() -> Path:
    p = Path("/bin/busybox")
    if not p.exists():
        raise SystemExit("/bin/busybox missing; run `bash e2e/realnode/setup-system.sh`")
    return p


def build_shell() -> Image:
    bb = _busybox()
    h = _hash_parts(FORMAT_VERSION, "shell", bb.read_bytes())
    img = Image("shell", h, CACHE / f"shell-{h}.oci.tar")
    if img.tarball.exists():
        return img
    t0 = time.monotonic()
    applets = subprocess.run(
        [str(bb), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    with _workdir("shell-") as d:
        layer = d / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("bin", "etc", "dev", "proc", "sys", "root"):
                _add_dir(tar, name, 0o700 if name == "root" else 0o755)
            _add_dir(tar, "tmp", 0o1777)
            _add_bytes(tar, "bin/busybox", bb.read_bytes(), 0o755)
            for a in sorted(set(applets) - {"busybox"}):
                _add_symlink(tar, f"bin/{a}", "busybox")
            _add_bytes(
                tar, "etc/passwd", ("root:x:0:0:root:/root:/bin/sh\n" + ETC_PASSWD_EXTRA).encode()
            )
            _add_bytes(tar, "etc/group", ("root:x:0:\n" + ETC_GROUP_EXTRA).encode())
        pack_oci(
            [layer],
            img.tarball,
            ref=img.ref,
            entrypoint=None,
            cmd=["/bin/sh"],
            env=[ENV_PATH, "HOME=/tmp"],
        )
    log(f"built {img.ref} in {time.monotonic() - t0:.1f} s")
    return img


def _debian_mirror() -> str:
    """The Debian mirror apt already uses on this machine (overridable by DEBIAN_MIRROR)."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for f in candidates:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                m = re.match(r"^\s*(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?(\s|$)", line)
                if m:
                    return m.group(1)
    raise SystemExit("no Debian mirror found in apt's sources; set DEBIAN_MIRROR")


def rootfs_tarball(packages: Sequence[str] = ("python3",)) -> Path:
    """The debootstrap'ed bookworm + ``packages`` rootfs as a tarball, built once and cached."""
    key = _hash_parts(FORMAT_VERSION, SUITE, "minbase", *packages, "rootfs-v1")
    out = CACHE / f"rootfs-{SUITE}-{'-'.join(packages)}-{key}.tar"
    if out.exists():
        return out
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap missing; run `bash e2e/realnode/setup-system.sh`")
    t0 = time.monotonic()
    with _workdir("rootfs-") as d:
        root = d / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                SUITE,
                str(root),
                _debian_mirror(),
            ],
            stdout=subprocess.DEVNULL,
        )
        # Package caches and lists only make the layer bigger.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        tmp = out.with_name(out.name + ".tmp")
        _run(
            [
                "tar",
                "-C",
                str(root),
                "--numeric-owner",
                "--sort=name",
                "--mtime=@0",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-cf",
                str(tmp),
                ".",
            ]
        )
        tmp.replace(out)
    log(f"rootfs {out.name} ({out.stat().st_size >> 20} MiB) in {time.monotonic() - t0:.1f} s")
    return out


def _build_wheel(dest: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(REPO)])
    wheels = sorted(dest.glob("k8s_step_operator-*.whl"))
    if not wheels:
        raise SystemExit(f"no wheel was built into {dest}")
    return wheels[-1]


def _prune_cache(kind: str, keep: Path, suffix: str = ".oci.tar") -> None:
    """Keep only the newest tarball of ``kind`` besides ``keep``: each Python one is ~300 MiB."""
    pattern = re.compile(re.escape(kind) + r"-[0-9a-f]+" + re.escape(suffix) + "$")
    old = sorted(
        (p for p in CACHE.iterdir() if pattern.match(p.name) and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for p in old[1:]:
        p.unlink(missing_ok=True)


def _pip_target(site: Path, *requirements: str, deps: bool = True) -> None:
    # The host interpreter and the image's are both CPython 3.11 on x86_64 glibc, so pip
    # picks wheels that load in the image; binary-only keeps host compilers out of it.
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-warn-script-location"]
    argv += ["--only-binary=:all:", "--target", str(site)]
    if not deps:
        argv.append("--no-deps")
    _run([*argv, *requirements])
    # Console scripts go to <target>/bin; the image has no use for them there.
    shutil.rmtree(site / "bin", ignore_errors=True)


def project_dependencies() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def python_base_layer() -> Path:
    """The rootfs plus the project's dependencies: the big layer, rebuilt only when they change."""
    rootfs = rootfs_tarball()
    deps = project_dependencies()
    # Not keyed by this script's hash: only a change to the code above bumps BASE_VERSION.
    key = _hash_parts(FORMAT_VERSION, BASE_VERSION, rootfs.name, *deps)
    out = CACHE / f"python-base-{key}.layer.tar"
    if out.exists():
        return out
    _site_layer(rootfs, deps, out, "python-base-")
    _prune_cache("python-base", out, suffix=".layer.tar")
    return out


def _site_layer(
    rootfs: Path, requirements: Sequence[str], out: Path, prefix: str, *, compile_pyc: bool = False
) -> None:
    """Write ``out``: the rootfs with ``requirements`` installed, the step user, ``python``."""
    t0 = time.monotonic()
    with _workdir(prefix) as d:
        site = d / "stage" / PY_SITE
        _pip_target(site, *requirements)
        if compile_pyc:
            _compile_unchecked(site)
        layer = d / "layer.tar"
        shutil.copyfile(rootfs, layer)
        with tarfile.open(rootfs) as base:
            passwd = base.extractfile("./etc/passwd")
            group = base.extractfile("./etc/group")
            assert passwd is not None and group is not None
            passwd_b, group_b = passwd.read(), group.read()
        with tarfile.open(layer, "a", format=tarfile.PAX_FORMAT) as tar:
            tar.add(str(site), f"./{PY_SITE}", filter=_tarinfo_root)
            _add_bytes(tar, "./etc/passwd", passwd_b + ETC_PASSWD_EXTRA.encode())
            _add_bytes(tar, "./etc/group", group_b + ETC_GROUP_EXTRA.encode())
            # Entrypoints say `python -m ...` (as ZenML's do); Debian only has python3.
            _add_symlink(tar, "./usr/local/bin/python", "/usr/bin/python3")
        layer.replace(out)
    log(f"base layer {out.name} ({out.stat().st_size >> 20} MiB) in {time.monotonic() - t0:.1f} s")


def _compile_unchecked(site: Path) -> None:
    """Byte-compile ``site`` into .pyc files Python uses without checking the sources.

    The layers are packed with every mtime at 0, which makes the timestamped .pyc files pip
    writes stale; a step would compile ZenML's ~1000 modules on every start (seconds), and
    could not keep them (the image is read-only to it). Host and image both run CPython 3.11.
    """
    argv = [sys.executable, "-m", "compileall", "-q", "-f", "-j", "0"]
    argv += ["--invalidation-mode", "unchecked-hash", str(site)]
    log("$ " + " ".join(argv))
    # A few packages ship files that are not Python 3 (templates, tests): those stay sources.
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log(f"compileall: some files were left uncompiled ({done.stdout.count(chr(10))} lines)")


# The environment of the Python images; ENV_PATH first, as in every image here.
PY_ENV = [ENV_PATH, "HOME=/tmp", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8"]


def _wheel_image(
    img: Image,
    base: Path,
    add: Callable[[tarfile.TarFile], None],
    *,
    compile_pyc: bool = False,
    env: Sequence[str] = (),
) -> Image:
    """Pack ``img``: ``base`` and a layer with this project's wheel (no deps), plus ``add``'s."""
    t0 = time.monotonic()
    with _workdir(f"{img.kind}-") as d:
        wheel = _build_wheel(d / "wheels")
        site = d / "stage" / PY_SITE
        _pip_target(site, str(wheel), deps=False)
        if compile_pyc:
            _compile_unchecked(site)
        layer = d / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            parts = Path(PY_SITE).parts
            for i in range(1, len(parts) + 1):
                _add_dir(tar, "./" + "/".join(parts[:i]))
            for entry in sorted(site.iterdir()):
                tar.add(str(entry), f"./{PY_SITE}/{entry.name}", filter=_tarinfo_root)
            add(tar)
        pack_oci(
            [base, layer],
            img.tarball,
            ref=img.ref,
            entrypoint=None,
            cmd=["python3"],
            env=[*PY_ENV, *env],
        )
    _prune_cache(img.kind, img.tarball)
    size = img.tarball.stat().st_size >> 20
    log(f"built {img.ref} ({size} MiB) in {time.monotonic() - t0:.1f} s")
    return img


def _add_sources(tar: tarfile.TarFile, root_mode: int = 0o755) -> None:
    """The pipeline code under ``/app`` (``root_mode``: who may write there)."""
    _add_dir(tar, f"./{SOURCE_ROOT}", root_mode)
    for f in _source_files():
        rel = f.relative_to(REPO)
        for i in range(1, len(rel.parts)):
            _add_dir(tar, f"./{SOURCE_ROOT}/" + "/".join(rel.parts[:i]))
        _add_bytes(tar, f"./{SOURCE_ROOT}/{rel.as_posix()}", f.read_bytes())


def build_python() -> Image:
    """Two layers: :func:`python_base_layer` and this project's wheel, installed without deps."""
    base = python_base_layer()
    h = _hash_parts(FORMAT_VERSION, _script_hash(), base.name, project_sources_hash())
    img = Image("python", h, CACHE / f"python-{h}.oci.tar")
    if img.tarball.exists():
        return img
    return _wheel_image(img, base, _add_sources, env=[f"PYTHONPATH=/{SOURCE_ROOT}"])


# The ZenML image: this project with its `zenml` extra (ZenML and its local store) and the
# requirements of ZenML's integrations the production stack uses, resolved together as `pip
# install 'k8s-step-operator[zenml]'` plus `zenml integration install kubernetes s3` resolve
# them. Bump when zenml_base_layer() changes what goes into its base layer.
ZENML_BASE_VERSION = "2"
# ZenML 0.98's kubernetes and s3 integrations' REQUIREMENTS, as `zenml integration
# export-requirements kubernetes s3` prints them (a test in the ZenML environment keeps them
# equal). Kubernetes' client resolves to 25.3 with them: the low end of the core's bounds.
ZENML_INTEGRATIONS = ("kubernetes", "s3")
ZENML_INTEGRATION_REQUIREMENTS = (
    "kubernetes>=21.7,<26",
    "Jinja2",
    "s3fs>2022.3.0,!=2025.3.1",
    "boto3",
    "aws-profile-manager",
)
# Where ZenML's step entrypoint creates its working directory (`/app`, code in `/app/code`), as
# whatever UID the step runs as.
ZENML_APP_DIR = "app"


def zenml_requirements() -> list[str]:
    """The project's dependencies, its `zenml` extra and ZenML's integrations' requirements."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return [
        *project["dependencies"],
        *project["optional-dependencies"]["zenml"],
        *ZENML_INTEGRATION_REQUIREMENTS,
    ]


def zenml_base_layer() -> Path:
    """The rootfs with ZenML and the project's dependencies, byte-compiled for fast starts."""
    rootfs = rootfs_tarball()
    requirements = zenml_requirements()
    key = _hash_parts(FORMAT_VERSION, ZENML_BASE_VERSION, rootfs.name, *requirements)
    out = CACHE / f"zenml-base-{key}.layer.tar"
    if out.exists():
        return out
    _site_layer(rootfs, requirements, out, "zenml-base-", compile_pyc=True)
    _prune_cache("zenml-base", out, suffix=".layer.tar")
    return out


def package_hash() -> str:
    """Hash of what the wheel is made of: pyproject.toml and the package's files."""
    files = [REPO / "pyproject.toml"]
    files += sorted(
        p
        for p in (REPO / "k8s_step_operator").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    parts: list[str | bytes] = []
    for f in files:
        parts += [str(f.relative_to(REPO)), f.read_bytes()]
    return _hash_parts(*parts)


# The benchmark's trace of ZenML's step launcher (e2e/images/zenml_trace.py), imported at every
# start by a .pth file and inert unless K8SSO_ZENML_TRACE is set.
ZENML_TRACE = Path(__file__).with_name("zenml_trace.py")


def build_zenml() -> Image:
    """Two layers: :func:`zenml_base_layer` and this project's wheel; ``/app`` open to any UID.

    Pipeline code is not in the image: ZenML uploads the pipeline's source root to the artifact
    store, and the step downloads it into ``/app/code``. The second layer also holds the
    benchmark's launcher trace (``zenml_trace.py``), off unless ``K8SSO_ZENML_TRACE`` is set.
    """
    base = zenml_base_layer()
    trace = ZENML_TRACE.read_bytes()
    h = _hash_parts(FORMAT_VERSION, _script_hash(), base.name, package_hash(), trace)
    img = Image("zenml", h, CACHE / f"zenml-{h}.oci.tar")
    if img.tarball.exists():
        return img

    def add(tar: tarfile.TarFile) -> None:
        _add_dir(tar, f"./{ZENML_APP_DIR}", 0o1777)
        _add_bytes(tar, f"./{PY_SITE}/k8sso_zenml_trace.py", trace)
        _add_bytes(tar, f"./{PY_SITE}/k8sso_zenml_trace.pth", b"import k8sso_zenml_trace\n")

    return _wheel_image(img, base, add, compile_pyc=True)


# Debian's PyTorch: the CPU build with the gloo backend and torch.distributed (its launcher is
# `python3 -m torch.distributed.run`, torchrun's module), no CUDA wheels to download.
TORCH_PACKAGES = ("python3", "python3-torch")
# Bump when torch_base_layer() changes what goes into its base layer.
TORCH_BASE_VERSION = "1"


def torch_base_layer() -> Path:
    """Debian's python3-torch rootfs with ZenML and the project's dependencies, byte-compiled."""
    rootfs = rootfs_tarball(TORCH_PACKAGES)
    requirements = zenml_requirements()
    key = _hash_parts(FORMAT_VERSION, TORCH_BASE_VERSION, rootfs.name, *requirements)
    out = CACHE / f"torch-base-{key}.layer.tar"
    if out.exists():
        return out
    _site_layer(rootfs, requirements, out, "torch-base-", compile_pyc=True)
    _prune_cache("torch-base", out, suffix=".layer.tar")
    return out


def build_torch() -> Image:
    """Two layers: :func:`torch_base_layer` and this project's wheel with the pipeline code.

    ``/app`` holds the pipeline code (on ``PYTHONPATH``) and is open to any UID, for ZenML's
    step entrypoint, which works there and downloads the pipeline's code into ``/app/code``.
    """
    base = torch_base_layer()
    h = _hash_parts(FORMAT_VERSION, _script_hash(), base.name, project_sources_hash())
    img = Image("torch", h, CACHE / f"torch-{h}.oci.tar")
    if img.tarball.exists():
        return img
    return _wheel_image(
        img,
        base,
        lambda tar: _add_sources(tar, 0o1777),
        compile_pyc=True,
        env=[f"PYTHONPATH=/{SOURCE_ROOT}"],
    )


BUILDERS = {
    "pause": build_pause,
    "shell": build_shell,
    "python": build_python,
    "zenml": build_zenml,
    "torch": build_torch,
}
# What `build`, `import` and `names` do without names: the ZenML image is built on request only
# (`make demo-zenml`, `make test`, CI), so that `make demo` never waits for it.
DEFAULT_KINDS = ("pause", "shell", "python")


def build(kinds: Sequence[str]) -> list[Image]:
    return [BUILDERS[k]() for k in kinds]


# ---------------------------------------------------------------------------------------------
# Importing into containerd


def _ctr(address: str, *args: str, capture: bool = False) -> str:
    argv = ["ctr", "--address", address, "--namespace", "k8s.io", *args]
    r = subprocess.run(argv, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def present(address: str) -> set[str]:
    return set(_ctr(address, "images", "ls", "-q", capture=True).split())


def import_images(address: str, images: Sequence[Image]) -> None:
    """Import each image unless containerd already has it; point its alias at it."""
    have = present(address)
    for img in images:
        if img.ref not in have:
            t0 = time.monotonic()
            _ctr(address, "images", "import", "--no-unpack=false", str(img.tarball))
            log(f"imported {img.ref} in {time.monotonic() - t0:.1f} s")
        if img.alias not in have or _digest(address, img.alias) != _digest(address, img.ref):
            _ctr(address, "images", "tag", "--force", img.ref, img.alias)
            log(f"tagged {img.alias} -> {img.ref}")
        # Older builds of the same image: the kubelet's image GC is off, so drop them here.
        # Containers still running from one keep their snapshot until they are removed.
        repo = img.ref.rsplit(":", 1)[0]
        stale = [r for r in have if r.rsplit(":", 1)[0] == repo and r not in (img.ref, img.alias)]
        if stale:
            _ctr(address, "images", "rm", *stale)
            log(f"removed older images {', '.join(stale)}")


def _digest(address: str, ref: str) -> str:
    for line in _ctr(address, "images", "ls", capture=True).splitlines()[1:]:
        cols = line.split()
        if cols and cols[0] == ref:
            return cols[2]
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) image tarballs")
    kinds_help = f"any of {', '.join(BUILDERS)} (default: {' '.join(DEFAULT_KINDS)})"
    b.add_argument("kinds", nargs="*", help=kinds_help)
    i = sub.add_parser("import", help="build if needed and import into containerd")
    i.add_argument("--address", required=True, help="containerd socket")
    i.add_argument("kinds", nargs="*", help=kinds_help)
    sub.add_parser("names", help="print the references of every image as JSON")
    args = ap.parse_args(argv)
    kinds = list(getattr(args, "kinds", None) or DEFAULT_KINDS)
    unknown = [k for k in kinds if k not in BUILDERS]
    if unknown:
        ap.error(f"unknown image {unknown[0]!r}; accepted: {', '.join(BUILDERS)}")
    if args.cmd == "build":
        for img in build(kinds):
            print(f"{img.kind}\t{img.ref}\t{img.alias}\t{img.tarball}")
    elif args.cmd == "import":
        import_images(args.address, build(kinds))
    else:
        imgs = build(list(DEFAULT_KINDS))
        print(json.dumps({m.kind: {"ref": m.ref, "alias": m.alias} for m in imgs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
