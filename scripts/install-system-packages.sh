#!/usr/bin/env bash
# Installs the Debian packages fastpath needs on a node, and nothing else.
# Safe to run twice: apt-get skips what is already installed, and the package
# lists are refreshed only when they are missing or older than a day.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-packages: run as root (it calls apt-get)" >&2
  exit 1
fi

packages=(
  # pod networking, the demo cluster, fastpath trace
  iproute2 iptables procps util-linux kmod
  # BGP route exchange between nodes
  bird2
  # the cluster datastore for many machines (etcd v3), and a top-of-rack router for the demo (FRR)
  etcd-server frr
  # the reference CNI plugins (ptp, host-local) for benchmarks and delegation tests
  containernetworking-plugins
  # socket-level redirect: BPF programs compiled by clang, loaded through libbpf
  clang llvm libbpf1 libbpf-dev linux-libc-dev bpftool
  # benchmark peers measured side by side with fastpath
  sockperf iperf3 haproxy wrk
  # a real container runtime for the CNI end-to-end test
  podman runc
  # a static busybox: the rootfs of the image the CNI end-to-end test imports into podman
  busybox-static
  # qemu guests for the kernel conformance suite (scripts/vm-run, under TCG)
  qemu-system-x86
)

export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/fastpath-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
  apt-get update -qq
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
