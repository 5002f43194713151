#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules and caches them outside the repository,
# keyed by version, so that later runs reuse them. A fresh machine rebuilds unattended.
#
# Kubernetes cannot be built with `go install k8s.io/kubernetes/cmd/...@vX`: its go.mod replaces
# every staging module with a local path, and replaces are ignored in a dependency. A wrapper
# module that replaces each staging module with its published v0.X.Y release builds it.
#
# Usage: build.sh [NAME...]   NAME: kubernetes etcd kwok helm coredns kueue karpenter seaweedfs
#        (default: all of them; `core` stands for the first five, `addons` for Kueue and
#        Karpenter, `stack` for the object store)
# Kueue and Karpenter are built from a copy of their module with a small, checked patch each
# (see build_kueue / build_karpenter): nothing else in this cluster may listen beyond 127.0.0.1
# or read certificates from fixed host paths.
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

[ $# -gt 0 ] || set -- core addons stack
want=()
for w in "$@"; do
  case $w in
    core) want+=(kubernetes etcd kwok helm coredns) ;;
    addons) want+=(kueue karpenter) ;;
    stack) want+=(seaweedfs) ;;
    *) want+=("$w") ;;
  esac
done

build_kubernetes() {
  local v=$KUBERNETES_VERSION out=$bin/kubernetes-$KUBERNETES_VERSION
  local all=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)
  # Only what is missing is built: a cache made before a command joined the list keeps the
  # others (one command of a warm module and build cache takes a minute, all of them ten).
  local cmds=() c
  for c in "${all[@]}"; do [ -x "$out/$c" ] || cmds+=("$c"); done
  if [ ${#cmds[@]} = 0 ]; then log "kubernetes $v: cached in $out"; return; fi
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
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  go build -trimpath -ldflags "$ld" -o "$out.tmp/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${cmds[@]}")
  mkdir -p "$out"
  for c in "${cmds[@]}"; do mv "$out.tmp/$c" "$out/$c"; done
  rm -rf "$out.tmp"
  cd "$cache" && rm -rf "$work"
  log "kubernetes $v: built ${cmds[*]} in $((SECONDS - start)) s"
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

# CoreDNS with only the plugins the cluster's DNS uses (its own main imports all of them, with
# the clients of every cloud DNS): the same coremain, a smaller and faster build.
COREDNS_PLUGINS=(bind cache errors health kubernetes loadbalance log ready)

build_coredns() {
  local v=$COREDNS_VERSION out=$bin/coredns-$COREDNS_VERSION
  if [ -x "$out/coredns" ]; then log "coredns $v: cached in $out"; return; fi
  local work=$cache/src/coredns-$v
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  local gomod
  gomod=$(go mod download -json "github.com/coredns/coredns@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -n "$gomod" ] || { log "coredns $v: download failed"; return 1; }
  {
    echo "module k8sso.local/coredns-build"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require github.com/coredns/coredns $v"
  } > go.mod
  {
    echo "package main"
    echo
    echo "import ("
    local p
    for p in "${COREDNS_PLUGINS[@]}"; do echo "	_ \"github.com/coredns/coredns/plugin/$p\""; done
    echo
    echo "	\"github.com/coredns/coredns/coremain\""
    echo ")"
    echo
    echo "func main() { coremain.Run() }"
  } > main.go
  log "coredns $v: building (plugins: ${COREDNS_PLUGINS[*]})"
  local start=$SECONDS
  go mod tidy >/dev/null
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" \
    -o "$out.tmp/coredns" .
  rm -rf "$out" && mv "$out.tmp" "$out"
  cd "$cache" && rm -rf "$work"
  log "coredns $v: built in $((SECONDS - start)) s"
}

# SeaweedFS's go.mod has `replace` lines, so `go install .../weed@V` is refused: a wrapper
# module requires the pinned version, repeats its replace lines (those that name a module, not
# a local path) and builds the `weed` command.
build_seaweedfs() {
  local v=$SEAWEEDFS_VERSION out=$bin/seaweedfs-$SEAWEEDFS_VERSION
  if [ -x "$out/weed" ]; then log "seaweedfs $v: cached in $out"; return; fi
  local work=$cache/src/seaweedfs-$v
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  local gomod
  gomod=$(go mod download -json "github.com/seaweedfs/seaweedfs@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -n "$gomod" ] || { log "seaweedfs $v: download failed"; return 1; }
  {
    echo "module k8sso.local/seaweedfs-build"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require github.com/seaweedfs/seaweedfs $v"
    echo
    grep -E '^replace [^ ]+ => [^ ./][^ ]* v[^ ]+$' "$gomod" || true
  } > go.mod
  log "seaweedfs $v: building weed (minutes on 2 cores)"
  local start=$SECONDS
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=${v##*-}" \
    -o "$out.tmp/weed" github.com/seaweedfs/seaweedfs/weed
  rm -rf "$out" && mv "$out.tmp" "$out"
  cd "$cache" && rm -rf "$work"
  log "seaweedfs $v: built in $((SECONDS - start)) s"
}

# The module's source, copied where it may be patched; prints the copy's path.
module_copy() {
  local mod=$1 v=$2 name=$3 dir work=$cache/src/$3-$2
  dir=$(go mod download -json "$mod@$v" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -n "$dir" ] || { log "$mod@$v: download failed"; return 1; }
  rm -rf "$work"
  mkdir -p "$(dirname "$work")"
  cp -r "$dir" "$work"
  chmod -R u+w "$work"
  echo "$work"
}

# Fails the build when a patch no longer applies to the pinned source.
expect_count() {
  local want=$1 pattern=$2 file=$3 got
  got=$(grep -c -- "$pattern" "$file" || true)
  [ "$got" = "$want" ] || { log "patch check failed: $file has $got lines matching $pattern, want $want"; return 1; }
}

build_kueue() {
  local v=$KUEUE_VERSION out=$bin/kueue-$KUEUE_VERSION
  if [ -x "$out/kueue" ] && [ -d "$out/crd" ] && [ -f "$out/webhook/manifests.yaml" ]; then
    log "kueue $v: cached in $out"; return
  fi
  log "kueue $v: building (minutes on 2 cores)"
  local start=$SECONDS work
  work=$(module_copy sigs.k8s.io/kueue "$v" kueue) || return 1
  cd "$work"
  # Without internal certificate management, the manager reads its metrics serving certificate
  # from /etc/kueue/metrics/certs and the visibility server's from /visibility: let an
  # environment variable name a directory of our own instead (unset: the paths as before).
  sed -i '/metricsCertPath := "\/etc\/kueue\/metrics\/certs"/a\
		if d := os.Getenv("KUEUE_METRICS_CERT_DIR"); d != "" { metricsCertPath = d }' cmd/kueue/main.go
  expect_count 1 'os.Getenv("KUEUE_METRICS_CERT_DIR")' cmd/kueue/main.go
  expect_count 1 'certDir = "/visibility"' pkg/visibility/server.go
  cat > pkg/visibility/zz_certdir_env.go <<'GO'
package visibility

import "os"

func init() {
	if d := os.Getenv("KUEUE_VISIBILITY_CERT_DIR"); d != "" {
		certDir = d
	}
}
GO
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$v" \
    -o "$out.tmp/kueue" ./cmd/kueue
  # What the cluster installs: the CRDs (with the kustomization that names the ones converted
  # by the manager's webhook) and the webhook configurations the manager serves.
  cp -r config/components/crd "$out.tmp/crd"
  mkdir -p "$out.tmp/webhook" && cp config/components/webhook/manifests.yaml "$out.tmp/webhook/"
  rm -rf "$out" && mv "$out.tmp" "$out"
  cd "$cache" && rm -rf "$work"
  log "kueue $v: built in $((SECONDS - start)) s"
}

build_karpenter() {
  local v=$KARPENTER_VERSION out=$bin/karpenter-$KARPENTER_VERSION
  if [ -x "$out/karpenter-kwok" ] && [ -d "$out/crds" ]; then
    log "karpenter $v: cached in $out"; return
  fi
  log "karpenter $v: building its KWOK provider with $KARPENTER_GO (minutes on 2 cores)"
  local start=$SECONDS work
  # Its go.mod asks for a newer Go than the machine's: the go command fetches that toolchain
  # from the module proxy once and keeps it in the module cache.
  export GOTOOLCHAIN=$KARPENTER_GO
  work=$(module_copy sigs.k8s.io/karpenter "$v" karpenter) || return 1
  cd "$work"
  # The metrics and health endpoints take a port only and bind every interface (":%d"):
  # bind them to loopback.
  expect_count 2 'fmt.Sprintf(":%d", options.FromContext(ctx)' pkg/operator/operator.go
  sed -i 's/fmt.Sprintf(":%d", options.FromContext(ctx)/fmt.Sprintf("127.0.0.1:%d", options.FromContext(ctx)/' \
    pkg/operator/operator.go
  mkdir -p "$out.tmp"
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=$v" \
    -o "$out.tmp/karpenter-kwok" ./kwok
  mkdir -p "$out.tmp/crds"
  cp pkg/apis/crds/*.yaml kwok/apis/crds/*.yaml "$out.tmp/crds/"
  rm -rf "$out" && mv "$out.tmp" "$out"
  cd "$cache" && rm -rf "$work"
  unset GOTOOLCHAIN
  log "karpenter $v: built in $((SECONDS - start)) s"
}

# Each build runs in a subshell: the directory it enters (and may remove), the toolchain it
# exports and any variable it sets end with it, so every order and every subset builds cold.
for w in "${want[@]}"; do ( "build_$w" ); done
