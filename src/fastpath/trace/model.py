"""What trace knows about the machine, as plain data: one snapshot per network namespace
(links, addresses, neighbours, sysctls, iptables rules) and the kernel's answers to
route lookups. Pure: the collection edge (`collect.py`) fills these in; tests build them
by hand. `Probe` is the seam between the two.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from fastpath.trace.iptables import Ruleset


@dataclass
class Link:
    index: int
    name: str
    kind: str | None = None          # "veth", "bridge", None for loopback/physical
    admin_up: bool = True            # IFF_UP: `ip link set X up`
    carrier: bool = True             # IFF_LOWER_UP: for a veth, its peer is up too
    master: str | None = None        # the bridge this link is a port of (same netns)
    peer_index: int | None = None    # IFLA_LINK: a veth's other end
    peer_nsid: int | None = None     # IFLA_LINK_NETNSID: None when the peer is in this netns
    addrs: list[str] = field(default_factory=list)   # "10.0.0.1/24"
    rp_filter: int = 0               # net.ipv4.conf.<name>.rp_filter
    forwarding: int = 0              # net.ipv4.conf.<name>.forwarding
    proxy_arp: int = 0               # net.ipv4.conf.<name>.proxy_arp
    group: int = 0                   # IFLA_GROUP, matched by iptables -m devgroup

    @property
    def state(self) -> str:
        if not self.admin_up:
            return "DOWN"
        return "UP" if self.carrier else "NO-CARRIER"

    def owns(self, ip: str) -> bool:
        return any(a.split("/")[0] == ip for a in self.addrs)

    def to_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "kind": self.kind,
                "state": self.state, "master": self.master, "addrs": self.addrs,
                "rp_filter": self.rp_filter, "forwarding": self.forwarding,
                "proxy_arp": self.proxy_arp, "group": self.group}


@dataclass
class NetnsSnapshot:
    name: str
    links: dict[str, Link] = field(default_factory=dict)
    ip_forward: int = 0                  # net.ipv4.ip_forward (= conf.all.forwarding)
    rp_filter_all: int = 0               # net.ipv4.conf.all.rp_filter
    proxy_arp_all: int = 0               # net.ipv4.conf.all.proxy_arp
    ruleset: Ruleset = field(default_factory=Ruleset)
    neighbours: dict[tuple[str, str], str] = field(default_factory=dict)  # (dev, ip) -> NUD state
    notes: list[str] = field(default_factory=list)   # what the snapshot could not see

    def link_by_index(self, index: int) -> Link | None:
        return next((lk for lk in self.links.values() if lk.index == index), None)

    def owner(self, ip: str) -> Link | None:
        """The link holding address `ip`, if this netns has it."""
        return next((lk for lk in self.links.values() if lk.owns(ip)), None)

    def down_links(self) -> list[Link]:
        return [lk for lk in self.links.values()
                if lk.name != "lo" and (not lk.admin_up or not lk.carrier)]


@dataclass
class RouteAnswer:
    """The kernel's answer to RTM_GETROUTE, `ip route get DST [from SRC] [iif I] [oif O]`."""
    dst: str
    src: str | None = None
    iif: str | None = None
    oif_query: str | None = None
    ok: bool = True
    type: str | None = None          # unicast, local, broadcast, unreachable, blackhole, prohibit
    oif: str | None = None
    gateway: str | None = None
    prefsrc: str | None = None
    table: int | None = None
    errno: int | None = None
    error: str | None = None         # strerror when not ok

    def query(self) -> str:
        q = f"ip route get {self.dst}"
        if self.src:
            q += f" from {self.src}"
        if self.iif:
            q += f" iif {self.iif}"
        if self.oif_query:
            q += f" oif {self.oif_query}"
        return q

    def answer(self) -> str:
        """The answer as `ip route get` prints it (one line)."""
        if not self.ok:
            name = _errno.errorcode.get(self.errno or 0, "")
            return f"{self.error} [{name}]" if name else str(self.error)
        parts = [] if self.type in (None, "unicast") else [self.type]
        parts.append(self.dst)
        if self.src and self.iif:
            parts += ["from", self.src]
        if self.gateway:
            parts += ["via", self.gateway]
        if self.oif:
            parts += ["dev", self.oif]
        if self.prefsrc:
            parts += ["src", self.prefsrc]
        if self.table not in (None, 254):
            parts += ["table", str(self.table)]
        if self.iif:
            parts += ["iif", self.iif]
        return " ".join(parts)

    def brief(self) -> str:
        """The answer without what the query already says: `via G dev D` / `local`."""
        if not self.ok:
            return self.answer()
        if self.type == "local":
            return "local"
        parts = [] if self.type in (None, "unicast") else [self.type]
        if self.gateway:
            parts += ["via", self.gateway]
        if self.oif:
            parts += ["dev", self.oif]
        return " ".join(parts)

    def to_dict(self) -> dict:
        return {"query": self.query(), "answer": self.answer(), "brief": self.brief(),
                "ok": self.ok,
                "type": self.type, "oif": self.oif, "gateway": self.gateway,
                "prefsrc": self.prefsrc, "table": self.table, "errno": self.errno,
                "error": self.error}


class Probe(Protocol):
    """What the path walk asks the machine. `collect.LiveProbe` answers from the kernel."""

    def namespaces(self) -> list[str]:
        """The network namespaces trace may follow a packet into."""

    def snapshot(self, netns: str) -> NetnsSnapshot:
        """Links, addresses, neighbours, sysctls and iptables rules of one netns."""

    def route_get(self, netns: str, dst: str, *, src: str | None = None,
                  iif: str | None = None, oif: str | None = None) -> RouteAnswer:
        """RTM_GETROUTE in `netns`; a refusal is an answer with ok=False, not an error."""

    def peer(self, netns: str, ifname: str) -> tuple[str, str] | None:
        """(netns, ifname) of the other end of veth `ifname`; None if not a veth or the
        other end is outside `namespaces()`."""

    def listening(self, netns: str, ip: str, port: int) -> bool | None:
        """Whether a TCP socket in `netns` listens on ip:port (or the wildcard address);
        None when that cannot be told."""


@dataclass(frozen=True)
class Endpoint:
    """A packet's source or destination: an address, the netns holding it, and the names
    people know it by."""
    ip: str
    netns: str | None
    label: str                       # "pod a", "node fp-x-node1", or the address
    node: str | None = None

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.ip)


TCP_LISTEN = "0A"   # include/net/tcp_states.h: TCP_LISTEN = 10


def tcp_listeners(proc_net_tcp: str) -> set[tuple[str, int]]:
    """(address, port) of every listening socket in the text of /proc/net/tcp (proc(5):
    local_address is the IPv4 address as a host-order hex word, then the port in hex)."""
    out = set()
    for line in proc_net_tcp.splitlines()[1:]:
        f = line.split()
        if len(f) < 4 or f[3] != TCP_LISTEN:
            continue
        addr, _, port = f[1].partition(":")
        try:
            ip = str(ipaddress.IPv4Address(int(addr, 16).to_bytes(4, "little")))
            out.add((ip, int(port, 16)))
        except ValueError:
            continue
    return out
