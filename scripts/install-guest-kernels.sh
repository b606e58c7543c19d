#!/usr/bin/env bash
# Installs the kernels the conformance suite boots in qemu guests (scripts/vm-run): the
# newest of Debian 12's 6.1 series (linux-image-6.1.0-N-amd64) and of its 6.12 series
# (linux-image-6.12.N+deb12-amd64). The packages put vmlinuz in /boot and the modules in
# /lib/modules; nothing boots them on the host (the host keeps its own kernel).
# Safe to run twice: a series that has an image installed is left alone.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-guest-kernels: run as root (it calls apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

want=()
for pattern in '^linux-image-6\.1\.0-[0-9]+-amd64$' '^linux-image-6\.12\.[0-9]+\+deb12-amd64$'; do
  if dpkg-query -W -f='${Package} ${Status}\n' 'linux-image-6.*' 2>/dev/null \
      | grep -E "${pattern%\$} install ok installed" -q; then
    continue
  fi
  pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1)
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache search --names-only "$pattern" | awk '{print $1}' | sort -V | tail -n 1)
  fi
  if [ -z "$pkg" ]; then
    echo "install-guest-kernels: no package matches $pattern" >&2
    exit 1
  fi
  want+=("$pkg")
done
if [ "${#want[@]}" -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${want[@]}"
fi
