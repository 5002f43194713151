#!/usr/bin/env bash
# Advertise fake GPUs on the nodes of a cluster whose GPU nodes are labelled but have no device
# plugin (kind, or any test cluster): the documented "Advertise Extended Resources for a Node"
# JSON patch on nodes/<name>/status. Each node labelled nvidia.com/gpu.count=N gets N
# nvidia.com/gpu (unless it is split into MIG slices: nvidia.com/mig.strategy=mixed); each node
# labelled amd.com/gpu.count=N gets N amd.com/gpu. Nodes that already advertise the resource are
# left alone.
#
# Allocatable is patched too (a kubelet recomputes it from capacity anyway; a simulated node has
# no kubelet to do so). The kubelet may drop the resource when it restarts: run this again then. Usage: e2e/kind/fake-gpus.sh [--context NAME]
set -euo pipefail
kubectl=${KUBECTL:-kubectl}
ctx=()
[ "${1:-}" = "--context" ] && ctx=(--context "$2")

advertise() {  # label resource [extra selector]
  local label=$1 resource=$2 extra=${3:-} key node count have
  key=${resource//\//~1}
  while read -r node count have; do
    [ -n "$node" ] || continue
    [ -z "$have" ] || continue
    "$kubectl" "${ctx[@]}" patch node "$node" --subresource=status --type=json \
      -p "[{\"op\": \"add\", \"path\": \"/status/capacity/$key\", \"value\": \"$count\"},
           {\"op\": \"add\", \"path\": \"/status/allocatable/$key\", \"value\": \"$count\"}]" >/dev/null
    echo "$node: $resource=$count"
  done < <("$kubectl" "${ctx[@]}" get nodes -l "$label$extra" -o jsonpath="{range .items[*]}\
{.metadata.name} {.metadata.labels.${label//./\\.}} {.status.capacity.${resource//./\\.}}{\"\\n\"}{end}")
}

advertise nvidia.com/gpu.count nvidia.com/gpu ",nvidia.com/mig.strategy!=mixed"
advertise amd.com/gpu.count amd.com/gpu

# Wait until the scheduler can see them (allocatable follows capacity on the next node update).
for _ in $(seq 1 30); do
  missing=$("$kubectl" "${ctx[@]}" get nodes -l 'nvidia.com/gpu.count,nvidia.com/mig.strategy!=mixed' \
    -o jsonpath='{range .items[*]}{.metadata.name}={.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' | grep -c '=$' || true)
  [ "$missing" = 0 ] && exit 0
  sleep 1
done
echo "allocatable nvidia.com/gpu did not appear on every GPU node" >&2
exit 1
