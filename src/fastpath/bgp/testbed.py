"""A bare underlay for BGP alone: an underlay netns with a bridge and N node namespaces
on it, each with the first address of its pod CIDR on `lo` (a stand-in pod). Used by
the BGP tests and `fastpath bench bgp` where the full pod network is not needed (the
BGP path is the same: BIRD in each node netns, sessions over the bridge).

Everything lives in namespaces named fp-<tag>-...; nothing touches the root namespace:
each veth is created inside a node netns with its peer placed straight into the
underlay netns.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from fastpath import naming
from fastpath.bgp.model import BgpNode
from fastpath.errors import FastpathError

UNDERLAY_NET = ipaddress.IPv4Network("10.237.0.0/24")
POD_SUPERNET = ipaddress.IPv4Network("10.238.0.0/16")


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise FastpathError(p.stderr.strip(), op="ip " + " ".join(args))


def underlay_ns() -> str:
    return naming.name("bgpu")


def node_def(i: int) -> BgpNode:
    """Node i (1-based): node<i>, underlay .i, pod CIDR 10.238.<i>.0/24."""
    addr = str(UNDERLAY_NET.network_address + i)
    return BgpNode(name=f"node{i}", netns=naming.name("bgp", f"node{i}"), address=addr,
                   pod_cidr=f"{POD_SUPERNET.network_address + (i << 8)}/24", router_id=addr)


def create_underlay() -> None:
    ns = underlay_ns()
    _ip("netns", "add", ns)
    _ip("-n", ns, "link", "set", "lo", "up")
    _ip("-n", ns, "link", "add", "br0", "type", "bridge")
    _ip("-n", ns, "link", "set", "br0", "up")


def add_node(n: BgpNode) -> None:
    """The node's netns, its underlay veth `eth0` (peer `n-<name>` on the bridge) and the
    pod CIDR's first address on `lo`."""
    ns, u = n.netns, underlay_ns()
    port = f"n-{n.name}"[:15]
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", u)
        _ip("-n", u, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{n.address}/{UNDERLAY_NET.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "addr", "add", f"{pod_ip(n)}/32", "dev", "lo")
    except BaseException:
        remove_node(n)
        raise


def pod_ip(n: BgpNode) -> str:
    return str(ipaddress.IPv4Network(n.pod_cidr).network_address + 1)


def set_underlay_link(n: BgpNode, up: bool) -> None:
    """Cut (or restore) the node's underlay link: its eth0 down (up)."""
    _ip("-n", n.netns, "link", "set", "eth0", "up" if up else "down")


def remove_node(n: BgpNode) -> None:
    subprocess.run(["ip", "netns", "del", n.netns], capture_output=True)
    subprocess.run(["ip", "-n", underlay_ns(), "link", "del", f"n-{n.name}"[:15]], capture_output=True)


def destroy(nodes=()) -> None:
    for n in nodes:
        remove_node(n)
    subprocess.run(["ip", "netns", "del", underlay_ns()], capture_output=True)


_PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], 9))
except ConnectionRefusedError:
    sys.exit(0)   # the RST came back: routed both ways
except OSError:
    sys.exit(1)
sys.exit(0)
"""


def reachable(src: BgpNode, dst: BgpNode, timeout: float = 1.0) -> bool:
    """Whether src's pod address reaches dst's and back: a TCP connect from one to the
    other's port 9 inside src's netns; the RST (or accept) of dst proves the round trip."""
    p = subprocess.run(["ip", "netns", "exec", src.netns, sys.executable, "-c", _PROBE,
                        pod_ip(src), pod_ip(dst), str(timeout)],
                       capture_output=True, timeout=timeout + 10)
    return p.returncode == 0
