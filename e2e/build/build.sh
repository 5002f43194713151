#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules and caches them outside the repository,
# keyed by version, so that later runs reuse them. A fresh machine rebuilds unattended.
#
# Kubernetes cannot be built with `go install k8s.io/kubernetes/cmd/...@vX`: its go.mod replaces
# every staging module with a local path, and replaces are ignored in a dependency. A wrapper
# module that replaces each staging module with its published v0.X.Y release builds it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${K8SSO_CACHE:-$HOME/.cache/k8s-step-operator}
bin=$cache/bin
mkdir -p "$bin"
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

log() { printf '[build] %s\n' "$*" >&2; }

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(kubernetes etcd kwok helm)

build_kubernetes() {
  local v=$KUBERNETES_VERSION out=$bin/kubernetes-$KUBERNETES_VERSION
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
  local missing=0 c
  for c in "${cmds[@]}"; do [ -x "$out/$c" ] || missing=1; done
  if [ $missing = 0 ]; then log "kubernetes $v: cached in $out"; return; fi
  local work=$cache/src/kubernetes-$v
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local staging=${v#v1.}; staging=v0.$staging
  {
    echo "module k8sso.local/kubernetes-build"
    echo
    grep -E '^(go|godebug) ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } > go.mod
  local major=${v#v}; major=${major%%.*}
  local minor=${v#v*.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "kubernetes $v: building ${cmds[*]} (minutes on 2 cores)"
  local start=$SECONDS
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "$ld" -o "$out.tmp/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${cmds[@]}")
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "kubernetes $v: built in $((SECONDS - start)) s"
}

build_etcd() {
  local v=$ETCD_VERSION out=$bin/etcd-$ETCD_VERSION
  if [ -x "$out/etcd" ]; then log "etcd $v: cached in $out"; return; fi
  local work=$cache/src/etcd-$v
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  # etcd's own main package only calls etcdmain.Main; a wrapper module builds the same server.
  cat > go.mod <<MOD
module k8sso.local/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $v
MOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "etcd $v: building"
  local start=$SECONDS
  go mod tidy >/dev/null
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "etcd $v: built in $((SECONDS - start)) s"
}

build_kwok() {
  local v=$KWOK_VERSION out=$bin/kwok-$KWOK_VERSION
  if [ -x "$out/kwok" ]; then log "kwok $v: cached in $out"; return; fi
  log "kwok $v: building"
  local start=$SECONDS
  mkdir -p "$out.tmp"
  GOBIN=$out.tmp go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$v"
  # The bare binary has no default stages; keep the module's stage files next to it.
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp -r "$dir/kustomize/stage" "$out.tmp/stage" && chmod -R u+w "$out.tmp/stage"
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "kwok $v: built in $((SECONDS - start)) s"
}

build_helm() {
  local v=$HELM_VERSION out=$bin/helm-$HELM_VERSION
  if [ -x "$out/helm" ]; then log "helm $v: cached in $out"; return; fi
  log "helm $v: building"
  local start=$SECONDS
  # As helm's Makefile does: stamp the Kubernetes minor of its client-go as the default for
  # `helm template` / `helm lint` (otherwise v1.20, which fails charts with a kubeVersion).
  local gomod kminor ld
  gomod=$(go mod download -json "helm.sh/helm/v3@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  kminor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$v"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
  done
  mkdir -p "$out.tmp"
  GOBIN=$out.tmp go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$v"
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "helm $v: built in $((SECONDS - start)) s"
}

for w in "${want[@]}"; do "build_$w"; done
