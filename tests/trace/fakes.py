"""An in-memory machine for the pure path tests: snapshots built by hand and a route
lookup that follows the kernel's rules closely enough for the walk (longest prefix,
local addresses first, iif lookups refused with EHOSTUNREACH when forwarding is off and
EXDEV when strict/loose reverse-path filtering fails; a link taken down loses its routes)."""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass, field

from fastpath.trace import iptables, rpfilter
from fastpath.trace.model import Endpoint, Link, NetnsSnapshot, RouteAnswer

GROUP = 0x6670
FORWARD_RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 ":FP-FORWARD - [0:0]\n-A FORWARD -j FP-FORWARD\n"
                 "-A FP-FORWARD -m devgroup --src-group 0x6670 -j ACCEPT\n"
                 "-A FP-FORWARD -m devgroup --dst-group 0x6670 -j ACCEPT\nCOMMIT\n")


@dataclass
class FakeRoute:
    dst: str
    dev: str
    via: str | None = None
    type: str = "unicast"


@dataclass
class FakeMachine:
    snaps: dict[str, NetnsSnapshot] = field(default_factory=dict)
    routes: dict[str, list[FakeRoute]] = field(default_factory=dict)
    peers: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    lookups: list[tuple] = field(default_factory=list)
    listeners: set[tuple[str, str, int]] | None = None   # (netns, ip, port); None: all listen

    # -- Probe --------------------------------------------------------------------
    def namespaces(self):
        return list(self.snaps)

    def snapshot(self, ns):
        return self.snaps[ns]

    def peer(self, ns, ifname):
        return self.peers.get((ns, ifname))

    def listening(self, ns, ip, port):
        if self.listeners is None:
            return True
        return (ns, ip, port) in self.listeners or (ns, "0.0.0.0", port) in self.listeners

    def route_get(self, ns, dst, *, src=None, iif=None, oif=None):
        self.lookups.append((ns, dst, src, iif))
        snap = self.snaps[ns]
        ans = RouteAnswer(dst=dst, src=src, iif=iif, oif_query=oif)

        def refuse(code):
            ans.ok, ans.errno, ans.error = False, code, os.strerror(code)
            return ans
        if snap.owner(dst) is not None:
            ans.type, ans.oif = "local", "lo"
            if iif:
                err = self._rp(snap, iif, src)
                if err:
                    return refuse(err)
            return ans
        best = self._lookup(ns, dst)
        if iif and not snap.links[iif].forwarding:
            return refuse(errno.EHOSTUNREACH)
        if best is None:
            return refuse(errno.ENETUNREACH)
        if iif:
            err = self._rp(snap, iif, src)
            if err:
                return refuse(err)
        ans.type, ans.oif, ans.gateway = best.type, best.dev, best.via
        return ans

    def _lookup(self, ns, dst):
        snap = self.snaps[ns]
        a = ipaddress.ip_address(dst)
        live = [r for r in self.routes.get(ns, []) if snap.links[r.dev].admin_up
                and a in ipaddress.ip_network(r.dst)]
        return max(live, key=lambda r: ipaddress.ip_network(r.dst).prefixlen, default=None)

    def _rp(self, snap, iif, src):
        back = self._lookup(snap.name, src)
        d = rpfilter.decide(src=src, ingress=iif, all_value=snap.rp_filter_all,
                            iface_value=snap.links[iif].rp_filter,
                            reverse_oif=back.dev if back else None)
        return None if d.passes else errno.EINVAL

    # -- building -----------------------------------------------------------------
    def netns(self, name, **kw) -> NetnsSnapshot:
        snap = self.snaps[name] = NetnsSnapshot(name=name, **kw)
        snap.links["lo"] = Link(1, "lo", addrs=["127.0.0.1/8"])
        return snap

    def veth(self, a_ns, a_if, b_ns, b_if, **kw_b) -> tuple[Link, Link]:
        a = Link(len(self.snaps[a_ns].links) + 1, a_if, kind="veth")
        b = Link(len(self.snaps[b_ns].links) + 1, b_if, kind="veth", **kw_b)
        self.snaps[a_ns].links[a_if], self.snaps[b_ns].links[b_if] = a, b
        self.peers[(a_ns, a_if)], self.peers[(b_ns, b_if)] = (b_ns, b_if), (a_ns, a_if)
        return a, b

    def route(self, ns, dst, dev, via=None, type="unicast"):
        self.routes.setdefault(ns, []).append(FakeRoute(dst, dev, via, type))

    def set_down(self, ns, ifname):
        """`ip link set down`: the link goes down, its peer loses carrier, and the kernel
        drops every route through it."""
        self.snaps[ns].links[ifname].admin_up = False
        self.routes[ns] = [r for r in self.routes.get(ns, []) if r.dev != ifname]
        peer = self.peers.get((ns, ifname))
        if peer:
            self.snaps[peer[0]].links[peer[1]].carrier = False


def cluster() -> tuple[FakeMachine, dict[str, Endpoint]]:
    """pa (n1), pc (n1), pb (n2); the same shape as topology.Topology."""
    m = FakeMachine()
    m.netns("ul")
    m.snaps["ul"].links["br0"] = Link(9, "br0", kind="bridge")
    node_ip = {"n1": "10.255.0.1", "n2": "10.255.0.2"}
    for node in ("n1", "n2"):
        m.netns(node, ip_forward=1, rp_filter_all=1, ruleset=iptables.parse(FORWARD_RULES))
        up, port = m.veth(node, "ul0", "ul", f"port-{node}")
        up.addrs.append(f"{node_ip[node]}/24")
        up.forwarding = 1
        port.master = "br0"
        m.route(node, "10.255.0.0/24", "ul0")
    m.route("n1", "10.244.2.0/24", "ul0", via="10.255.0.2")
    m.route("n2", "10.244.1.0/24", "ul0", via="10.255.0.1")
    eps = {}
    for pod, node, ip in (("pa", "n1", "10.244.1.2"), ("pc", "n1", "10.244.1.3"),
                          ("pb", "n2", "10.244.2.2")):
        m.netns(pod)
        eth0, host = m.veth(pod, "eth0", node, f"v-{pod}", group=GROUP, forwarding=1)
        eth0.addrs.append(f"{ip}/32")
        m.snaps[pod].neighbours[("eth0", "169.254.1.1")] = "PERMANENT"
        m.route(pod, "169.254.1.1/32", "eth0")
        m.route(pod, "0.0.0.0/0", "eth0", via="169.254.1.1")
        m.route(node, f"{ip}/32", f"v-{pod}")
        eps[pod] = Endpoint(ip, pod, f"pod {pod}", node)
    return m, eps
