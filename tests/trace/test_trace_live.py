"""Break a real two-node topology in each way trace must name, check that it names it
(and that the kernel agrees: TCP really fails), repair, and check it flows again."""

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fastpath.kernel.netns import run_in
from fastpath.trace import path
from fastpath.trace.collect import LiveProbe
from fastpath.trace.model import Endpoint

from .topology import HOST_MAC, Topology, in_ns, sh

pytestmark = pytest.mark.root


def trace(t: Topology, src: str, dst: str, **kw) -> path.Trace:
    s, d = t.pods[src], t.pods[dst]
    with LiveProbe() as p:
        return path.walk(p, Endpoint(s.ip, s.netns, f"pod {src}", s.node),
                         Endpoint(d.ip, d.netns, f"pod {dst}", d.node),
                         labels=t.labels, port=kw.pop("port", 7777), **kw)


def rewire_pod(t: Topology, pod: str) -> None:
    """What the pod loses with its link: routes and the gateway's neighbour entry."""
    ns = t.pods[pod].netns
    sh("ip", "-n", ns, "-b", "-", input=(
        "link set eth0 up\nroute add 169.254.1.1/32 dev eth0 scope link\n"
        "route add default via 169.254.1.1 dev eth0\n"
        f"neigh replace 169.254.1.1 lladdr {HOST_MAC} dev eth0 nud permanent\n"))


@dataclass
class Breakage:
    name: str
    kind: str
    says: str                    # a piece of the one-line cause
    where: Callable              # topology -> netns the cause is in
    breaks: Callable
    repairs: Callable


def _n(node):
    return lambda t: t.nodes[node]


BREAKAGES = [
    Breakage("no-route", path.NO_ROUTE, "no route to 10.244.2.2 in node n1", _n("n1"),
             lambda t: sh("ip", "-n", t.nodes["n1"], "route", "del", "10.244.2.0/24"),
             lambda t: sh("ip", "-n", t.nodes["n1"], "route", "add", "10.244.2.0/24", "via",
                          "10.255.0.2")),
    Breakage("forward-policy", path.POLICY_DROP, "FORWARD policy DROP in node n2", _n("n2"),
             lambda t: in_ns(t.nodes["n2"], "iptables", "-D", "FP-FORWARD", "-m", "devgroup",
                             "--dst-group", "0x6670", "-j", "ACCEPT"),
             lambda t: in_ns(t.nodes["n2"], "iptables", "-A", "FP-FORWARD", "-m", "devgroup",
                             "--dst-group", "0x6670", "-j", "ACCEPT")),
    Breakage("pod-link-down", path.LINK_DOWN, "link down: eth0 in pod pb", _n("n2"),
             lambda t: sh("ip", "-n", t.pods["pb"].netns, "link", "set", "eth0", "down"),
             lambda t: rewire_pod(t, "pb")),
    Breakage("host-veth-down", path.LINK_DOWN, "link down: {host} in node n2", _n("n2"),
             lambda t: sh("ip", "-n", t.nodes["n2"], "link", "set", t.pods["pb"].host_veth,
                          "down"),
             lambda t: sh("ip", "-n", t.nodes["n2"], "-b", "-", input=(
                 f"link set {t.pods['pb'].host_veth} up\n"
                 f"route add 10.244.2.2/32 dev {t.pods['pb'].host_veth} scope link\n"))),
    Breakage("bridge-port-down", path.LINK_DOWN, "link down: bridge port {port} in underlay",
             lambda t: t.underlay,
             lambda t: sh("ip", "-n", t.underlay, "link", "set", t.bridge_ports["n2"], "down"),
             lambda t: sh("ip", "-n", t.underlay, "link", "set", t.bridge_ports["n2"], "up")),
    Breakage("rp-filter", path.RP_FILTER, "reverse-path filter drops it in node n2", _n("n2"),
             lambda t: sh("ip", "-n", t.nodes["n2"], "route", "add", "10.244.1.2/32", "dev",
                          t.pods["pb"].host_veth),
             lambda t: sh("ip", "-n", t.nodes["n2"], "route", "del", "10.244.1.2/32")),
    Breakage("forwarding-off", path.FORWARDING_OFF, "IP forwarding is off in node n1", _n("n1"),
             lambda t: in_ns(t.nodes["n1"], "sysctl", "-qw", "net.ipv4.ip_forward=0"),
             lambda t: in_ns(t.nodes["n1"], "sysctl", "-qw", "net.ipv4.ip_forward=1",
                             "net.ipv4.conf.all.rp_filter=1")),
]


@pytest.mark.parametrize("b", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_trace_names_the_break_and_the_repair_restores_the_path(topo, b):
    assert trace(topo, "pa", "pb").ok
    b.breaks(topo)
    tr = trace(topo, "pa", "pb")
    cause = tr.broken_by
    assert cause is not None, tr.summary()
    says = b.says.format(host=topo.pods["pb"].host_veth, port=topo.bridge_ports["n2"])
    assert (cause.kind, cause.netns) == (b.kind, b.where(topo)), cause.line
    assert says in cause.line
    assert not topo.reaches("pa", "pb"), "the kernel still delivers: the break is not real"
    b.repairs(topo)
    tr = trace(topo, "pa", "pb")
    assert tr.ok, tr.summary()
    assert topo.reaches("pa", "pb")


def test_cli_trace_json_and_exit_code(topo, fastpath):
    pa, pb = topo.pods["pa"], topo.pods["pb"]
    # --port asks whether anything listens there: first nothing does (refused), then a
    # listener made in pb's netns does
    p = fastpath("trace", pa.ip, pb.ip, "--port", "8080", "--json", check=False)
    d = json.loads(p.stdout)
    assert p.returncode == 1 and d["delivered"] and d["cause"]["kind"] == path.NO_LISTENER
    assert "nothing there listens on tcp/8080: the connection is refused" in d["summary"]
    srv = run_in(pb.netns, socket.create_server, (pb.ip, 8080))
    try:
        p = fastpath("trace", pa.ip, pb.ip, "--port", "8080", "--json")
    finally:
        srv.close()
    d = json.loads(p.stdout)
    assert d["ok"] and d["port"] == 8080 and len(d["hops"]) == 5
    assert [h["netns"] for h in d["hops"]] == [pa.netns, topo.nodes["n1"], topo.underlay,
                                               topo.nodes["n2"], pb.netns]
    assert d["hops"][1]["route"]["query"].startswith(f"ip route get {pb.ip} from {pa.ip} iif ")
    assert d["reply"]["ok"]
    in_ns(topo.nodes["n2"], "iptables", "-F", "FP-FORWARD")
    p = fastpath("trace", pa.netns, pb.ip, "--proto", "icmp", check=False)
    assert p.returncode == 1
    assert "BROKEN FORWARD policy DROP" in p.stdout and "icmp 10.244.1.2 -> 10.244.2.2" in p.stdout
    p = fastpath("trace", "nosuchpod", pb.ip, check=False)
    assert p.returncode == 2 and "unknown source 'nosuchpod'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
