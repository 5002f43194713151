#!/usr/bin/env bash
# Installs the Debian packages the real node and the step images need. Idempotent: packages that
# are already installed are left alone, and apt is not touched at all when nothing is missing.
#
#   containerd, runc              the container runtime the kubelet talks to (CRI)
#   containernetworking-plugins   the `loopback` CNI plugin containerd runs for every pod
#   debootstrap                   builds the Debian rootfs of the Python step image
#   busybox-static                the shell step image and the sandbox (pause) image
#   gcc, libc6-dev                builds the static pause binary of the sandbox image
#   iproute2, util-linux          `ip` and `nsenter`: the pod bridge, routes, network namespaces
#   iptables                      kube-proxy's Service rules and the pod network's guard rules
#
# The packages' own services are never started: the node runs containerd with its own config,
# state and socket under <repo>/.cluster/realnode/ (see node.py).
set -euo pipefail

PKGS=(containerd runc containernetworking-plugins debootstrap busybox-static gcc libc6-dev
  iproute2 util-linux iptables)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-system.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup-system.sh: all packages present"
  exit 0
fi

echo "setup-system.sh: installing ${missing[*]}"
# Keep apt from starting the packages' own services (a system containerd on the default socket).
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-system.sh: done"
