"""e2e/build/build.sh builds cold in any order: every build runs against a stub `go`.

CI reuses the cached binaries, so a build that only breaks from an empty cache (a build that
removes its work directory while standing in it, then the next one running `go` from a directory
that no longer exists) would never show there. This runs every build function in sequence, in
the order `make binaries` uses and reversed, against a `go` that fails the way the real one does
when its working directory is gone, and that writes the files each build expects to find.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "e2e" / "build" / "build.sh"

# A stand-in for the go command: refuses to run from a removed directory (as `go` does:
# "cannot determine current directory: getwd: no such file or directory"), and otherwise
# creates what each subcommand would (a module directory, a go.mod, binaries).
STUB_GO = r"""#!/usr/bin/env bash
set -euo pipefail
if ! /bin/pwd -P >/dev/null 2>&1; then
  echo "cannot determine current directory: getwd: no such file or directory" >&2
  exit 1
fi
echo "go $* (in $(/bin/pwd -P))" >> "$STUB_LOG"
mods=$STUB_ROOT/mods
case "$1 $2" in
  "mod download")
    mod=${@: -1}; dir=$mods/${mod//[\/@]/_}
    mkdir -p "$dir/kustomize/stage/pod" "$dir/cmd/kueue" "$dir/pkg/visibility" \
      "$dir/config/components/crd" "$dir/config/components/webhook" "$dir/pkg/operator" \
      "$dir/pkg/apis/crds" "$dir/kwok/apis/crds"
    printf 'go 1.25.0\ngodebug default=go1.25\n\tk8s.io/api => ./staging/src/k8s.io/api\n' \
      > "$dir/go.mod"
    echo '	metricsCertPath := "/etc/kueue/metrics/certs"' > "$dir/cmd/kueue/main.go"
    echo '	certDir = "/visibility"' > "$dir/pkg/visibility/server.go"
    printf '%s\n' 'a := fmt.Sprintf(":%d", options.FromContext(ctx).MetricsPort)' \
      'b := fmt.Sprintf(":%d", options.FromContext(ctx).HealthProbePort)' \
      > "$dir/pkg/operator/operator.go"
    echo 'kind: X' > "$dir/config/components/webhook/manifests.yaml"
    touch "$dir/pkg/apis/crds/a.yaml" "$dir/kwok/apis/crds/b.yaml" "$dir/stage.yaml"
    printf '{\n\t"Dir": "%s",\n\t"GoMod": "%s"\n}\n' "$dir" "$dir/go.mod"
    ;;
  "mod tidy") ;;
  *)
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "-o" ] && out=$a; prev=$a; done
    if [ -n "$out" ]; then
      case $out in
        */) for a in "$@"; do
              case $a in k8s.io/kubernetes/cmd/*)
                c=${a##*/}; printf '#!/bin/sh\n' > "$out$c"; chmod +x "$out$c" ;;
              esac
            done ;;
        *) printf '#!/bin/sh\n' > "$out"; chmod +x "$out" ;;
      esac
    elif [ "$1" = install ]; then
      name=${@: -1}; name=${name%@*}; name=${name##*/}
      printf '#!/bin/sh\n' > "$GOBIN/$name"; chmod +x "$GOBIN/$name"
    fi
    ;;
esac
"""

ALL = ["kubernetes", "etcd", "kwok", "helm", "coredns", "kueue", "karpenter", "seaweedfs"]


def _run(tmp_path: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "stub"
    stub.mkdir(exist_ok=True)
    go = stub / "go"
    go.write_text(STUB_GO)
    go.chmod(0o755)
    env = {
        "PATH": f"{stub}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "K8SSO_CACHE": str(tmp_path / "cache"),
        "STUB_ROOT": str(tmp_path),
        "STUB_LOG": str(tmp_path / "go.log"),
    }
    return subprocess.run(
        ["bash", str(BUILD), *names],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("order", [ALL, list(reversed(ALL)), ["kueue", "karpenter"]])
def test_every_build_runs_cold_in_sequence(tmp_path: Path, order: list[str]) -> None:
    result = _run(tmp_path, order)
    assert result.returncode == 0, result.stderr
    assert "getwd" not in result.stderr
    bins = tmp_path / "cache" / "bin"
    for path in [
        "kubernetes-*/kube-apiserver",
        "kubernetes-*/kube-proxy",
        "etcd-*/etcd",
        "coredns-*/coredns",
        "seaweedfs-*/weed",
        "kwok-*/kwok",
        "helm-*/helm",
        "kueue-*/kueue",
        "karpenter-*/karpenter-kwok",
    ]:
        if path.split("-")[0] in order:
            assert list(bins.glob(path)), f"{path} not built: {result.stderr}"
    # A build leaves nothing behind in the working directory it was started from.
    assert {p.name for p in tmp_path.iterdir()} <= {"cache", "go.log", "home", "mods", "stub"}


def test_a_second_run_reuses_every_cached_binary(tmp_path: Path) -> None:
    assert _run(tmp_path, ALL).returncode == 0
    (tmp_path / "go.log").unlink()
    again = _run(tmp_path, ALL)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("cached in") == len(ALL)
    assert not (tmp_path / "go.log").exists()


def test_a_kubernetes_command_added_later_is_built_alone(tmp_path: Path) -> None:
    """A cache from before kube-proxy joined keeps the other commands; only the new one builds."""
    assert _run(tmp_path, ["kubernetes"]).returncode == 0
    out = next((tmp_path / "cache" / "bin").glob("kubernetes-*"))
    (out / "kube-proxy").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (tmp_path / "go.log").unlink()
    again = _run(tmp_path, ["kubernetes"])
    assert again.returncode == 0, again.stderr
    builds = [line for line in (tmp_path / "go.log").read_text().splitlines() if " build " in line]
    assert len(builds) == 1 and "cmd/kube-proxy" in builds[0]
    assert "cmd/kubelet" not in builds[0]
    assert (out / "kube-proxy").exists()
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before


def test_the_stub_fails_from_a_removed_directory(tmp_path: Path) -> None:
    """The check above can fail: the stub refuses to run where the real go would."""
    _run(tmp_path, ["etcd"])
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && go mod download -json x@v1"
    env = dict(os.environ, STUB_ROOT=str(tmp_path), STUB_LOG=str(tmp_path / "go.log"))
    env["PATH"] = f"{tmp_path / 'stub'}:{env['PATH']}"
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "getwd" in result.stderr
