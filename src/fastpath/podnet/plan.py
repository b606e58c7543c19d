"""Pure planning: what a pod's wiring and a demo cluster look like, before any syscall.

Nothing here touches the kernel or the state database, so unit tests import it without
root. The edge modules (attach, cluster) apply what these functions decide.

The pod's default route (a decision, see attach.py for how it is applied):
    pod:  address IP/32 on eth0 (IFA_F_NOPREFIXROUTE for wider prefixes)
          169.254.1.1 dev eth0 scope link; default via 169.254.1.1 dev eth0
          neighbour 169.254.1.1 -> the host veth's MAC, permanent
    node: IP/32 dev <host veth> scope link; the host veth has no address
We take Calico's link-local gateway rather than ptp's gateway-on-the-host-veth because the
gateway then costs no address from the pod CIDR, is the same for every pod on every node,
and the host side carries no per-pod address, so a pod's whole footprint on the node is
one link and one /32 route. Calico answers the pod's ARP for 169.254.1.1 with proxy ARP;
proxy ARP only answers for targets the node can route, and our nodes have no default route
(the demo's never do), so instead we install the gateway's neighbour entry in the pod: no
ARP round trip, no proxy_delay (up to 0.8 s on the first packet), nothing to route.
Every host veth gets the same MAC (as Calico's ee:ee:ee:ee:ee:ee), so the pod's neighbour
entry is known before the link exists and the whole wiring is a fixed batch of requests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from fastpath.errors import UsageError

LINK_LOCAL_GATEWAY = ipaddress.IPv4Address("169.254.1.1")
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"
# Interface group (IFLA_GROUP) of every host-side pod veth: FP-FORWARD accepts exactly
# the traffic entering or leaving an interface of this group (xt_devgroup), so adding a
# pod needs no iptables call at all. 0x6670 is "fp".
POD_DEVGROUP = 0x6670
DEFAULT_MTU = 1500
POD_IFNAME = "eth0"

DEFAULT_UNDERLAY = "10.255.0.0/24"
DEFAULT_POD_SUPERNET = "10.244.0.0/16"
NODE_PREFIXLEN = 24

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: 1-31 lowercase letters, digits or '-'")
    return name


@dataclass(frozen=True)
class PodWiring:
    """One pod's link, address and routes, on both sides of its veth."""

    host_ifname: str
    address: ipaddress.IPv4Interface       # as given: ip/prefix
    ifname: str = POD_IFNAME
    gateway: ipaddress.IPv4Address = LINK_LOCAL_GATEWAY
    mtu: int = DEFAULT_MTU
    host_mac: str = HOST_VETH_MAC
    devgroup: int | None = POD_DEVGROUP

    @classmethod
    def make(cls, *, host_ifname: str, address: str, ifname: str = POD_IFNAME,
             gateway: str | None = None, mtu: int | None = None,
             devgroup: int | None = POD_DEVGROUP) -> "PodWiring":
        if not host_ifname or len(host_ifname) > 15 or "/" in host_ifname or " " in host_ifname:
            raise UsageError(f"invalid host interface name {host_ifname!r} (1-15 characters)")
        if not ifname or len(ifname) > 15 or "/" in ifname:
            raise UsageError(f"invalid pod interface name {ifname!r} (1-15 characters)")
        try:
            iface = ipaddress.IPv4Interface(address if "/" in str(address) else f"{address}/32")
        except ValueError as e:
            raise UsageError(f"invalid pod address {address!r}: {e}") from None
        gw = LINK_LOCAL_GATEWAY if gateway is None else ipaddress.IPv4Address(str(gateway))
        if gw == iface.ip:
            raise UsageError(f"pod address {iface.ip} is its own gateway")
        m = DEFAULT_MTU if mtu is None else int(mtu)
        if not 68 <= m <= 65535:
            raise UsageError(f"invalid MTU {m} (68-65535)")
        return cls(host_ifname=host_ifname, address=iface, ifname=ifname, gateway=gw, mtu=m,
                   devgroup=devgroup)

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip

    @property
    def noprefixroute(self) -> bool:
        """Wider than /32: keep the kernel from adding an on-link subnet route in the pod,
        so that every destination goes through the gateway (routing mode)."""
        return self.address.network.prefixlen < 32

    def pod_routes(self) -> list[dict]:
        """Routes in the pod, in order (the gateway's on-link route first)."""
        return [{"dst": f"{self.gateway}/32", "scope": "link"},
                {"dst": "0.0.0.0/0", "gateway": str(self.gateway)}]

    def host_routes(self) -> list[dict]:
        return [{"dst": f"{self.ip}/32", "scope": "link"}]


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    underlay_ip: ipaddress.IPv4Address
    pod_cidr: ipaddress.IPv4Network

    @property
    def router_id(self) -> str:
        return str(self.underlay_ip)


@dataclass(frozen=True)
class ClusterPlan:
    underlay: ipaddress.IPv4Network
    pod_supernet: ipaddress.IPv4Network
    nodes: tuple[NodePlan, ...]
    pods: tuple[tuple[str, str], ...] = field(default=())   # (pod name, node name)


def parse_net(what: str, cidr: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as e:
        raise UsageError(f"invalid {what} {cidr!r}: {e}") from None


def node_name(index: int) -> str:
    return f"node{index}"


def pod_name(node: str, k: int) -> str:
    return f"{node}-pod{k}"


def node_pod_cidr(supernet: ipaddress.IPv4Network, index: int,
                  prefixlen: int = NODE_PREFIXLEN) -> ipaddress.IPv4Network:
    """Node `index` (1-based) gets the index-th /prefixlen of the supernet."""
    if prefixlen < supernet.prefixlen:
        raise UsageError(f"pod supernet {supernet} is smaller than a node's /{prefixlen}")
    count = 1 << (prefixlen - supernet.prefixlen)
    if not 1 <= index < count:
        raise UsageError(f"pod supernet {supernet} has no room for node {index} "
                         f"({count - 1} /{prefixlen} blocks)")
    return ipaddress.IPv4Network((int(supernet.network_address) + (index << (32 - prefixlen)), prefixlen))


def underlay_ip(underlay: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """Node `index` (1-based) is host `index` of the underlay."""
    if not 1 <= index < underlay.num_addresses - 1:
        raise UsageError(f"underlay {underlay} has no address for node {index}")
    return underlay.network_address + index


def check_overlaps(underlay: ipaddress.IPv4Network, pod_cidrs: dict[str, ipaddress.IPv4Network]) -> None:
    """UsageError naming both sides when a pod CIDR overlaps the underlay or another's."""
    items = sorted(pod_cidrs.items())
    for i, (n, c) in enumerate(items):
        if c.overlaps(underlay):
            raise UsageError(f"pod CIDR {c} of node {n} overlaps the underlay {underlay}")
        for m, d in items[i + 1:]:
            if c.overlaps(d):
                raise UsageError(f"pod CIDR {c} of node {n} overlaps pod CIDR {d} of node {m}")


def check_new_cidr(name: str, cidr: ipaddress.IPv4Network, underlay: ipaddress.IPv4Network,
                   existing: dict[str, ipaddress.IPv4Network]) -> None:
    """A node being added: its pod CIDR against the underlay and every existing node's."""
    if cidr.overlaps(underlay):
        raise UsageError(f"pod CIDR {cidr} of node {name} overlaps the underlay {underlay}")
    for other, c in sorted(existing.items()):
        if cidr.overlaps(c):
            raise UsageError(f"pod CIDR {cidr} of node {name} overlaps pod CIDR {c} of node {other}")


def plan_cluster(nodes: int = 2, pods: int = 2, *, underlay: str = DEFAULT_UNDERLAY,
                 pod_supernet: str = DEFAULT_POD_SUPERNET) -> ClusterPlan:
    if not 1 <= nodes <= 64:
        raise UsageError(f"--nodes {nodes}: use 1 to 64 nodes")
    if not 0 <= pods <= 250:
        raise UsageError(f"--pods {pods}: use 0 to 250 pods per node")
    u = parse_net("underlay CIDR", underlay)
    s = parse_net("pod supernet", pod_supernet)
    if u.overlaps(s):
        raise UsageError(f"pod supernet {s} overlaps the underlay {u}")
    plans = tuple(NodePlan(node_name(i), i, underlay_ip(u, i), node_pod_cidr(s, i))
                  for i in range(1, nodes + 1))
    check_overlaps(u, {n.name: n.pod_cidr for n in plans})
    pod_list = tuple((pod_name(n.name, k), n.name) for n in plans for k in range(1, pods + 1))
    return ClusterPlan(u, s, plans, pod_list)


def static_routes(node: str, cidrs: dict[str, tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]
                  ) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """On `node`: every other node's pod CIDR via that node's underlay address.
    `cidrs` maps node name -> (pod CIDR, underlay address)."""
    return [(c, via) for n, (c, via) in sorted(cidrs.items()) if n != node]
