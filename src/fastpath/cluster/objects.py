"""The cluster's objects, their keys in the datastore and their rules. Pure: no I/O.

Key layout (one prefix per kind, JSON values):

    /fastpath/nodes/NAME        Node      registration: addresses, pod CIDR, ASN, labels
    /fastpath/alive/NAME        Alive     on the node agent's lease: present = node alive
    /fastpath/pools/NAME        Pool      a CIDR cut into blocks of one size
    /fastpath/blocks/A.B.C.D-N  Block     a pool's block with node affinity (created, never
                                          overwritten: two nodes never hold one block)
    /fastpath/services/NAME     Service   listen VIP:port; backends by address or pod prefix
    /fastpath/peers/NAME        Peer      an external BGP peer, global or for one node
    /fastpath/pods/NODE/NAME    Pod       a pod a node's CNI added (its agent writes it)
    /fastpath/config/bgp        BgpConfig mesh on/off, route reflectors, the default ASN

Registration and liveness are apart, as Calico keeps them. Registration decides the data
plane: every registered node with a pod CIDR is peered with, and its pods stay service
backends. The `alive` key says only whether its agent (the control plane) runs: an agent
that dies changes no route and no session, since its BIRD and pods go on (a node that
stops for real is withdrawn by BGP's hold time, and the proxy's health checks take its
backends out). Services leave out a node's pods only once its agent has been dead for a
long grace (the agent's `dead_node_grace`), or when `node del` removes its registration.

How Kubernetes would map onto this (no API server runs here, so this is on paper):
Node.spec.podCIDRs -> Node.pod_cidr (blocks unused); node Ready/Lease objects -> Alive;
Service (ClusterIP:port) -> Service.listen; EndpointSlice endpoints -> Service.backends
(the slice controller already resolved the selector, so `pods` stays empty); BGP peers
stay fastpath objects (a CRD, as Calico's BGPPeer).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from fastpath.errors import ConfigError, UsageError

ROOT = "/fastpath/"
DEFAULT_ASN = 64512
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class Conflict(UsageError):
    """A new object clashes with one in the datastore; the message names both."""


def check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"{kind} name {name!r} must be 1-31 lowercase letters, digits or '-', "
                          "starting with a letter")
    return name


def _ip(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        a = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not an IPv4 address") from None
    if a.is_unspecified or a.is_multicast or a.is_loopback or a.is_reserved:
        raise ConfigError(f"{what} {value} is not a usable unicast address")
    return a


def _net(value: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as e:
        raise ConfigError(f"{what} {value!r} is not an IPv4 network ({e})") from None


def _asn(value: Any, what: str = "AS number") -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a number") from None
    if not 1 <= n <= 4294967295:
        raise ConfigError(f"{what} {n} is out of range 1..4294967295")
    return n


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {value!r} is not IP:PORT")
    _ip(host, what)
    return host, int(port)


@dataclass(frozen=True)
class Node:
    name: str
    address: str              # underlay address with prefix: 10.0.0.1/24
    pod_cidr: str | None      # None until the agent has a block
    asn: int = DEFAULT_ASN
    router_id: str = ""       # default: the underlay address
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def rid(self) -> str:
        return self.router_id or self.ip

    def validate(self) -> "Node":
        check_name("node", self.name)
        try:
            if "/" not in self.address:
                raise ValueError("no prefix")
            iface = ipaddress.IPv4Interface(self.address)
        except ValueError:
            raise ConfigError(f"node {self.name}: underlay address {self.address!r} is not "
                              "IPv4 ADDRESS/PREFIX") from None
        _ip(str(iface.ip), f"node {self.name}: underlay address")
        _ip(self.rid, f"node {self.name}: router id")
        _asn(self.asn)
        if self.pod_cidr is not None:
            n = _net(self.pod_cidr, f"node {self.name}: pod CIDR")
            if not 8 <= n.prefixlen <= 30:
                raise ConfigError(f"node {self.name}: pod CIDR {n} must be a /8 to /30")
        return self


@dataclass(frozen=True)
class Alive:
    name: str
    lease: int
    pid: int
    host: str
    started: float
    boot_id: str = ""        # the holder's machine boot (kernel.proc.boot_id)
    starttime: int = 0       # the holder's start in clock ticks since boot: with boot_id
                             # and pid, one process, checked on the same machine

    def held_by_dead_process(self, boot_id: str, runs) -> bool:
        """Whether the holder is known dead: it ran on this very boot (`boot_id`) and
        `runs(pid, starttime)` says it no longer does. Elsewhere only the lease can tell."""
        return bool(self.boot_id) and self.boot_id == boot_id and bool(self.starttime) \
            and not runs(self.pid, self.starttime)


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: str
    block_prefix: int = 24

    def validate(self) -> "Pool":
        check_name("pool", self.name)
        n = _net(self.cidr, f"pool {self.name}: CIDR")
        if not n.prefixlen <= self.block_prefix <= 30:
            raise ConfigError(f"pool {self.name}: block size /{self.block_prefix} must lie "
                              f"between /{n.prefixlen} and /30")
        return self


@dataclass(frozen=True)
class Block:
    cidr: str
    node: str
    pool: str


@dataclass(frozen=True)
class Service:
    name: str
    listen: str                                   # VIP:PORT
    backends: tuple[str, ...] = ()                # IP:PORT
    pods: str | None = None                       # pod name prefix
    port: int | None = None                       # the pods' port
    selector: dict[str, str] = field(default_factory=dict)  # pod labels, all must match
    stamp: float = 0.0                            # when written (programming latency)

    def validate(self) -> "Service":
        check_name("service", self.name)
        parse_hostport(self.listen, f"service {self.name}: listen")
        for b in self.backends:
            parse_hostport(b, f"service {self.name}: backend")
        by_pods = self.pods is not None or bool(self.selector)
        if by_pods == bool(self.backends):
            raise ConfigError(f"service {self.name}: give backends as addresses or as pods "
                              "(a prefix or labels), one of the two")
        if by_pods and not (self.port and 0 < self.port < 65536):
            raise ConfigError(f"service {self.name}: backends given as pods need --port")
        return self


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    asn: int
    node: str | None = None     # None: every node peers with it
    password: str | None = None

    def validate(self) -> "Peer":
        check_name("peer", self.name)
        _ip(self.address, f"peer {self.name}: address")
        _asn(self.asn, f"peer {self.name}: AS number")
        if self.node is not None:
            check_name("node", self.node)
        if self.password is not None and (not self.password or '"' in self.password
                                          or "\n" in self.password or len(self.password) > 80):
            raise ConfigError(f"peer {self.name}: the password must be 1-80 characters without "
                              "quotes or newlines")
        return self

    def public(self) -> dict:
        d = asdict(self)
        d["password"] = "(set)" if self.password else None
        return d


@dataclass(frozen=True)
class Pod:
    node: str
    name: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    stamp: float = 0.0


@dataclass(frozen=True)
class BgpConfig:
    mesh: bool = True
    reflectors: tuple[str, ...] = ()
    asn: int = DEFAULT_ASN
    hold: int = 3        # BGP hold time (keepalive a third of it)


KINDS: dict[str, type] = {"nodes": Node, "alive": Alive, "pools": Pool, "blocks": Block,
                          "services": Service, "peers": Peer, "pods": Pod}


def key(kind: str, *parts: str) -> str:
    return ROOT + kind + "/" + "/".join(parts)


def block_key(cidr: str) -> str:
    return key("blocks", cidr.replace("/", "-"))


def encode(obj: Any) -> bytes:
    return json.dumps(asdict(obj), sort_keys=True, separators=(",", ":")).encode()


def decode(cls: type, raw: bytes) -> Any:
    d = json.loads(raw)
    for k, v in d.items():  # tuples come back from JSON as lists
        if isinstance(v, list):
            d[k] = tuple(v)
    return cls(**d)


# ---- a consistent view of everything, and what a node derives from it ------------------

@dataclass
class View:
    nodes: dict[str, Node] = field(default_factory=dict)
    alive: dict[str, Alive] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    bgp: BgpConfig = field(default_factory=BgpConfig)

    @classmethod
    def of(cls, items: list[tuple[str, bytes]]) -> "View":
        v = cls()
        for k, raw in items:
            rest = k[len(ROOT):]
            kind, _, name = rest.partition("/")
            try:
                if kind == "config" and name == "bgp":
                    v.bgp = decode(BgpConfig, raw)
                elif kind == "pods":
                    p = decode(Pod, raw)
                    v.pods[(p.node, p.name)] = p
                elif kind == "blocks":
                    b = decode(Block, raw)
                    v.blocks[b.cidr] = b
                elif kind in KINDS:
                    getattr(v, kind)[name] = decode(KINDS[kind], raw)
            except (ValueError, TypeError):
                continue  # a value written by a newer fastpath: skip, never crash the agent
        return v

    def live_nodes(self) -> list[Node]:
        """Registered nodes whose agent is alive (holds its lease)."""
        return [n for name, n in sorted(self.nodes.items()) if name in self.alive and n.pod_cidr]

    def routed_nodes(self) -> list[Node]:
        """Every registered node with a pod CIDR: the ones BGP peers with, alive or not."""
        return [n for _, n in sorted(self.nodes.items()) if n.pod_cidr]

    def dead_nodes(self) -> list[str]:
        """Registered nodes whose agent holds no lease."""
        return sorted(name for name in self.nodes if name not in self.alive)

    def node_blocks(self, node: str) -> list[str]:
        return sorted(b.cidr for b in self.blocks.values() if b.node == node)

    def backends(self, svc: Service, gone: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """A service's backends now: its addresses, or the pods it selects on registered
        nodes, less those on `gone` nodes (dead beyond the grace: see the module's note)."""
        if svc.backends:
            return list(svc.backends)
        out = []
        for (node, name), p in sorted(self.pods.items()):
            if node not in self.nodes or node in gone:
                continue  # a backend whose node left (or is long dead) leaves the service
            if svc.pods is not None and not name.startswith(svc.pods):
                continue
            if any(p.labels.get(k) != v for k, v in svc.selector.items()):
                continue
            out.append(f"{p.ip}:{svc.port}")
        return out

    def peers_of(self, node: str) -> list[Peer]:
        return [p for _, p in sorted(self.peers.items()) if p.node in (None, node)]


def check_node(view: View, new: Node, *, own_lease: int = 0,
               holder_dead=lambda a: False) -> None:
    """Refuse a registration that clashes with another node, naming the clash: a live
    node of the same name (another agent holds it, and `holder_dead(alive)` does not know
    that agent dead), an equal or overlapping pod CIDR, a router id or an underlay
    address already taken."""
    new.validate()
    alive = view.alive.get(new.name)
    if alive is not None and alive.lease != own_lease and not holder_dead(alive):
        raise Conflict(f"node {new.name} is already registered by a live agent (pid {alive.pid} "
                       f"on {alive.host}, lease {alive.lease:x})",
                       hint="pick another --node name, or stop that agent")
    mine = ipaddress.IPv4Network(new.pod_cidr) if new.pod_cidr else None
    for other in view.nodes.values():
        if other.name == new.name:
            continue
        if other.rid == new.rid:
            raise Conflict(f"router id {new.rid} of node {new.name} is already node {other.name}'s")
        if other.ip == new.ip:
            raise Conflict(f"underlay address {new.ip} of node {new.name} is already node "
                           f"{other.name}'s")
        theirs = [other.pod_cidr] if other.pod_cidr else []
        theirs += view.node_blocks(other.name)
        for cidr in theirs:
            if mine is not None and mine.overlaps(ipaddress.IPv4Network(cidr)):
                what = "is" if str(mine) == cidr else "overlaps"
                raise Conflict(f"pod CIDR {mine} of node {new.name} {what} node {other.name}'s {cidr}")
