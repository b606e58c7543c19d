"""Network namespaces for sockredir's tests, torture and bench: a node netns routing
between pod netns over veth pairs, the way routing-mode pod networking does (pod IP/32 on
eth0, default via 169.254.1.1; on the node, podIP/32 dev veth, forwarding on), so
pod-to-pod traffic crosses two veths and the node's routing, and the accelerated path can
be compared with it.

`in_netns(name, fn)` runs fn in a short-lived thread that setns(2)'d into the namespace:
setns changes only the calling thread, and a socket stays in the netns it was created in,
so one process can own sockets in several pods.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import threading
from dataclasses import dataclass, field

from fastpath import naming
from fastpath.errors import KernelError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
GATEWAY = "169.254.1.1"
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str, fn, *args):
    """fn(*args) inside netns `name`, from a thread of its own; returns its result."""
    out: dict = {}

    def body():
        try:
            fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise KernelError(os.strerror(e), op=f"setns {name}", errno=e)
            finally:
                os.close(fd)
            out["v"] = fn(*args)
        except BaseException as e:  # re-raised in the caller
            out["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out.get("v")


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class Pod:
    name: str   # netns
    ip: str
    veth: str   # node side


@dataclass
class PodPair:
    """fp-<tag>-<prefix>node with pods fp-<tag>-<prefix>a and -b; remove() undoes it all."""

    prefix: str = "sr"
    cidr: str = "10.244.77.0/24"
    node: str = ""
    pods: list[Pod] = field(default_factory=list)

    def create(self) -> "PodPair":
        from pyroute2 import IPRoute, netns

        net = ipaddress.ip_network(self.cidr)
        self.node = naming.name(self.prefix + "node")
        try:
            netns.create(self.node)
            in_netns(self.node, self._node_setup)
            for i, suffix in enumerate(("a", "b")):
                pod = Pod(naming.name(self.prefix + suffix), str(net[2 + i]),
                          naming.link_name(self.prefix, suffix))
                netns.create(pod.name)
                self.pods.append(pod)
                with IPRoute(netns=self.node) as ipr:
                    ipr.link("add", ifname=pod.veth, kind="veth", peer={"ifname": "eth0"})
                    peer = ipr.link_lookup(ifname="eth0")[0]
                    ipr.link("set", index=peer, net_ns_fd=pod.name)
                    idx = ipr.link_lookup(ifname=pod.veth)[0]
                    ipr.addr("add", index=idx, address=GATEWAY, prefixlen=32)
                    ipr.link("set", index=idx, state="up")
                    ipr.route("add", dst=f"{pod.ip}/32", oif=idx)
                with IPRoute(netns=pod.name) as ipr:
                    lo = ipr.link_lookup(ifname="lo")[0]
                    ipr.link("set", index=lo, state="up")
                    eth = ipr.link_lookup(ifname="eth0")[0]
                    ipr.addr("add", index=eth, address=pod.ip, prefixlen=32)
                    ipr.link("set", index=eth, state="up")
                    ipr.route("add", dst=f"{GATEWAY}/32", oif=eth, scope=253)
                    ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth)
        except BaseException:
            self.remove()
            raise
        return self

    def _node_setup(self) -> None:
        from pyroute2 import IPRoute
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def remove(self) -> None:
        from pyroute2 import netns
        for n in [p.name for p in self.pods] + ([self.node] if self.node else []):
            try:
                netns.remove(n)
            except OSError:
                pass
        self.pods = []

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()
