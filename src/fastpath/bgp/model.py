"""The BGP view of a cluster: nodes, who peers with whom, and the timers. Pure: no I/O.

Everything BIRD is told comes from here, and every definition is checked here first,
so a malformed or conflicting node is refused before any BIRD config is written
(`validate`). The rules are those a BGP mesh needs to be unambiguous:

- every router id is a distinct IPv4 address (BGP drops an OPEN from a peer that shares
  its own router id, RFC 6286 section 2.2, and iBGP loop detection relies on it);
- every underlay address is distinct and unicast (it is the BGP next hop);
- pod CIDRs do not overlap one another (two nodes announcing one prefix, or nested
  prefixes, would route a pod's packets to the wrong node) nor the underlay addresses;
- names are short lowercase words (they become BIRD protocol names and file names).

Topology: full mesh by default (n*(n-1)/2 sessions); with a route reflector, the
reflector peers with every other node as its RR client and the clients peer only with
it (n-1 sessions), as Calico's route-reflector mode does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace

from fastpath.errors import ConfigError, NotFound, UsageError

# A private 16-bit ASN (RFC 6996), the one Calico uses by default too.
DEFAULT_ASN = 64512

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Timers:
    """BGP timers, in seconds. BGP allows a hold time of 0 or >= 3 (RFC 4271 4.2); the
    demo uses the shortest legal one so a dead peer is noticed within 3 s."""

    hold: int = 3
    keepalive: int = 1
    connect_retry: int = 1
    # after a session error BIRD waits between these before retrying (default 60..300 s)
    error_wait_min: int = 1
    error_wait_max: int = 5

    def validate(self) -> None:
        if self.hold != 0 and self.hold < 3:
            raise ConfigError(f"hold time {self.hold}s: BGP allows 0 or at least 3 seconds",
                              where="bgp timers")
        if self.hold and not 0 < self.keepalive < self.hold:
            raise ConfigError(f"keepalive {self.keepalive}s must be positive and below the "
                              f"hold time {self.hold}s", where="bgp timers")
        if self.connect_retry < 1:
            raise ConfigError("connect retry must be at least 1 second", where="bgp timers")
        if not 1 <= self.error_wait_min <= self.error_wait_max:
            raise ConfigError("error wait must satisfy 1 <= min <= max", where="bgp timers")


@dataclass(frozen=True)
class BgpNode:
    """One node as BGP sees it. `address` is the underlay address BIRD speaks from."""

    name: str
    netns: str
    address: str
    pod_cidr: str
    router_id: str
    asn: int | None = None   # None: the mesh's ASN (iBGP); another: eBGP between nodes

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr)


@dataclass(frozen=True)
class ExternalPeer:
    """A router outside the cluster (a top-of-rack switch, a route server), peered over
    eBGP by every node (`node` None) or by one node."""

    name: str
    address: str
    asn: int
    node: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class Mesh:
    """The whole BGP topology: nodes, the reflector (None: full mesh), ASN and timers;
    external peers; `node_mesh` False peers the nodes only with the external ones (the
    ToR design: each node talks to its rack's router, never to the other nodes)."""

    nodes: tuple[BgpNode, ...]
    reflector: str | None = None
    asn: int = DEFAULT_ASN
    timers: Timers = field(default_factory=Timers)
    external: tuple[ExternalPeer, ...] = ()
    node_mesh: bool = True

    def asn_of(self, node: BgpNode) -> int:
        return node.asn or self.asn

    def external_of(self, name: str) -> list[ExternalPeer]:
        return [p for p in self.external if p.node in (None, name)]

    def node(self, name: str) -> BgpNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise NotFound(f"no node {name!r} in the cluster")

    def peers(self, name: str) -> list[tuple[BgpNode, bool]]:
        """The nodes `name` has a session with, each with whether that peer is our RR
        client (True only on the reflector)."""
        me = self.node(name)
        others = [n for n in self.nodes if n.name != me.name]
        if not self.node_mesh:
            return []
        if self.reflector is None:
            return [(n, False) for n in others]
        if me.name == self.reflector:
            return [(n, True) for n in others]
        return [(self.node(self.reflector), False)]

    def sessions(self) -> list[tuple[str, str]]:
        """Every BGP session once, as (a, b) with a < b."""
        out: set[tuple[str, str]] = set()
        for n in self.nodes:
            for p, _ in self.peers(n.name):
                a, b = sorted((n.name, p.name))
                out.add((a, b))
        return sorted(out)

    def with_node(self, node: BgpNode) -> "Mesh":
        return replace(self, nodes=self.nodes + (node,))

    def without_node(self, name: str) -> "Mesh":
        self.node(name)
        if name == self.reflector:
            raise UsageError(f"node {name!r} is the route reflector; the other nodes would "
                             "lose every route", hint="choose another node to remove")
        return replace(self, nodes=tuple(n for n in self.nodes if n.name != name))


def _ipv4(value: str, what: str, where: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError):
        raise ConfigError(f"{what} {value!r} is not an IPv4 address", where=where) from None
    if (addr.is_unspecified or addr.is_multicast or addr.is_loopback
            or addr == ipaddress.IPv4Address("255.255.255.255")):
        raise ConfigError(f"{what} {value} is not a usable unicast address", where=where)
    return addr


def _network(value: str, where: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        raise ConfigError(f"pod CIDR {value!r} is not an IPv4 network ({e})", where=where) from None
    if net.prefixlen < 8 or net.prefixlen > 30:
        raise ConfigError(f"pod CIDR {value} must be a /8 to /30", where=where)
    return net


def validate(mesh: Mesh) -> None:
    """Raise ConfigError naming the first malformed or conflicting definition."""
    mesh.timers.validate()
    if not 1 <= mesh.asn <= 4294967295:
        raise ConfigError(f"AS number {mesh.asn} is out of range 1..4294967295", where="bgp")
    if not mesh.nodes:
        raise ConfigError("no nodes", where="bgp")
    names: dict[str, BgpNode] = {}
    ids: dict[ipaddress.IPv4Address, str] = {}
    addrs: dict[ipaddress.IPv4Address, str] = {}
    nets: list[tuple[ipaddress.IPv4Network, str]] = []
    for n in mesh.nodes:
        where = f"node {n.name!r}"
        if not _NAME_RE.match(n.name or ""):
            raise ConfigError("node name must be 1-31 lowercase letters, digits or '-', "
                              "starting with a letter", where=where)
        if n.name in names:
            raise ConfigError("defined twice", where=where)
        names[n.name] = n
        if not n.netns:
            raise ConfigError("no network namespace", where=where)
        rid = _ipv4(n.router_id, "router id", where)
        if rid in ids:
            raise ConfigError(f"router id {rid} is already node {ids[rid]!r}'s", where=where)
        ids[rid] = n.name
        addr = _ipv4(n.address, "underlay address", where)
        if addr in addrs:
            raise ConfigError(f"underlay address {addr} is already node {addrs[addr]!r}'s",
                              where=where)
        addrs[addr] = n.name
        net = _network(n.pod_cidr, where)
        for other, owner in nets:
            if net == other:
                raise ConfigError(f"pod CIDR {net} is already node {owner!r}'s", where=where)
            if net.overlaps(other):
                raise ConfigError(f"pod CIDR {net} overlaps node {owner!r}'s {other}",
                                  where=where)
        nets.append((net, n.name))
    for addr, owner in addrs.items():
        for net, holder in nets:
            if addr in net:
                raise ConfigError(f"underlay address {addr} of node {owner!r} lies inside "
                                  f"node {holder!r}'s pod CIDR {net}", where=f"node {owner!r}")
    ext_names: set[str] = set()
    for p in mesh.external:
        where = f"peer {p.name!r}"
        if p.name in ext_names:
            raise ConfigError("defined twice", where=where)
        ext_names.add(p.name)
        addr = _ipv4(p.address, "address", where)
        if addr in addrs:
            raise ConfigError(f"address {addr} is node {addrs[addr]!r}'s underlay address", where=where)
        if not 1 <= p.asn <= 4294967295:
            raise ConfigError(f"AS number {p.asn} is out of range 1..4294967295", where=where)
        if p.node is not None and p.node not in names:
            raise ConfigError(f"node {p.node!r} is not a node of the cluster", where=where)
        if p.password is not None and ('"' in p.password or "\n" in p.password or not p.password):
            raise ConfigError("the password must be non-empty, without quotes or newlines", where=where)
    if mesh.reflector is not None and mesh.reflector not in names:
        raise ConfigError(f"route reflector {mesh.reflector!r} is not a node of the cluster",
                          where="bgp")
