"""sysctls of one netns: /proc/sys/net follows the netns of the thread that opens the file,
so we step into the netns (fastpath.kernel.netns.entered), open, and step back."""

from __future__ import annotations

from collections.abc import Mapping

from fastpath.errors import KernelError
from fastpath.kernel.netns import Netns, NetnsSpec, entered


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(ns: "NetnsSpec", key: str) -> str:
    with Netns.open(ns) as n, entered(n):
        try:
            with open(_path(key)) as f:
                return f.read().strip()
        except OSError as e:
            raise KernelError.from_oserror(f"read sysctl {key} in netns {n.label}", e) from e


def write(ns: "NetnsSpec", values: Mapping[str, str | int]) -> None:
    """Set several sysctls in one visit to the netns."""
    with Netns.open(ns) as n, entered(n):
        for key, value in values.items():
            try:
                with open(_path(key), "w") as f:
                    f.write(str(value))
            except OSError as e:
                raise KernelError.from_oserror(f"set sysctl {key}={value} in netns {n.label}", e) from e


# A node: forwards between pods and the underlay; strict reverse-path filtering, as a
# hardened host has (routing mode keeps every path symmetric, so it never drops ours).
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 1,
    "net.ipv4.conf.default.rp_filter": 1,
}
