"""Two pods on one node, wired exactly as `fastpath pod add` wires them (podnet.attach):
the topology the accel tests, torture and bench compare against the redirect.

    fp-<tag>-<prefix>node   ip_forward on, CIDR .1/32 on lo, no netfilter rules (a fresh
                            netns accepts)
    fp-<tag>-<prefix>a, -b  eth0 = CIDR .2 and .3 /32, default via the link-local gateway

Pod-to-pod traffic crosses two veths and the node's routing. remove() undoes it all,
also after a half-made create().
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field

from fastpath import naming
from fastpath.errors import FastpathError
from fastpath.kernel import netns
from fastpath.podnet import attach, sysctl
from fastpath.podnet.rtnl import Rtnl


@dataclass
class Pod:
    name: str   # netns
    ip: str
    veth: str   # node side


@dataclass
class PodPair:
    prefix: str = "sr"
    cidr: str = "10.244.77.0/24"
    node: str = ""
    pods: list[Pod] = field(default_factory=list)

    def create(self) -> "PodPair":
        net = ipaddress.ip_network(self.cidr)
        try:
            self.node = naming.name(self.prefix + "node")
            netns.create(self.node)
            sysctl.write(self.node, {"net.ipv4.ip_forward": 1})
            # The node's source address for ARP toward its pods (a real node uses its
            # underlay address; this one has no other link)
            with Rtnl(self.node) as r:
                lo = r.index("lo")
                r.call("address lo", "addr", "add", index=lo, address=str(net[1]), prefixlen=32)
                r.call("lo up", "link", "set", index=lo, state="up")
            for i, suffix in enumerate(("a", "b")):
                pod = Pod(naming.name(self.prefix + suffix), str(net[2 + i]),
                          naming.link_name(self.prefix, suffix))
                netns.create(pod.name)
                self.pods.append(pod)
                attach.attach(self.node, pod.name, host_ifname=pod.veth,
                              address=f"{pod.ip}/32")
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for n in [p.name for p in self.pods] + ([self.node] if self.node else []):
            with contextlib.suppress(FastpathError):
                netns.delete(n)
        self.pods = []
        self.node = ""

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()
