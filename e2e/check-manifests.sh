#!/usr/bin/env bash
# The Helm chart is the source of truth for the cluster objects; manifests/ holds them rendered
# with the chart's default values, for `kubectl apply -k manifests/` without Helm. This script
# lints the chart, renders it again and fails with a diff when manifests/ has drifted.
#
# Usage: e2e/check-manifests.sh          check (exit 1 and a diff on drift)
#        e2e/check-manifests.sh --write  re-render manifests/ from the chart
# Helm: $HELM, else the one e2e/build/build.sh helm builds, else helm on PATH.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=build/versions.env
source "$root/e2e/build/versions.env"
cache=${K8SSO_CACHE:-$HOME/.cache/k8s-step-operator}
helm=${HELM:-$cache/bin/helm-$HELM_VERSION/helm}
if [ ! -x "$helm" ]; then
  helm=$(command -v helm) || { echo "helm not found: run bash e2e/build/build.sh helm" >&2; exit 2; }
fi

chart=$root/charts/k8s-step-operator
manifests=$root/manifests
release=k8s-step-operator
namespace=k8s-step-operator
# Rendering must not depend on the Helm build's default Kubernetes version.
kube_version=$KUBERNETES_VERSION
header="# Rendered from charts/k8s-step-operator by e2e/check-manifests.sh --write: do not edit."

# Every optional object on, so that lint sees every template.
all_on=(--set namespace.create=true,pipeline.tokenSecret.create=true,resourceQuota.enabled=true
        --set limitRange.enabled=true,priorityClass.enabled=true
        --set kueue.enabled=true,kueue.createQueues=true)
"$helm" lint --strict --quiet "$chart"
"$helm" lint --strict --quiet "$chart" "${all_on[@]}"

render() {
  local out=$1
  mkdir -p "$out"
  {
    echo "$header"
    "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$kube_version" \
      --skip-tests
  } > "$out/k8s-step-operator.yaml"
  # The chart leaves the namespace to `helm install --create-namespace` by default; the plain
  # manifests carry it, with its Pod Security labels, so that they stand alone.
  {
    echo "$header"
    "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$kube_version" \
      --set namespace.create=true --show-only templates/namespace.yaml
  } > "$out/namespace.yaml"
  cat > "$out/kustomization.yaml" <<KUST
$header
# kubectl apply -k manifests/
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - namespace.yaml
  - k8s-step-operator.yaml
KUST
}

if [ "${1:-}" = "--write" ]; then
  render "$manifests"
  echo "manifests/ rendered from the chart"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render "$tmp/manifests"
if ! diff -ru "$manifests" "$tmp/manifests"; then
  echo "manifests/ has drifted from charts/k8s-step-operator: run e2e/check-manifests.sh --write" >&2
  exit 1
fi
echo "manifests/ matches the chart"
