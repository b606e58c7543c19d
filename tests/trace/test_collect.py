"""The live probe on real namespaces: what netlink, sysctl and iptables-save say."""

import errno
import subprocess

import pytest

from fastpath.errors import NotFound
from fastpath.trace.collect import LiveProbe, scoped_namespaces
from fastpath.trace.model import tcp_listeners

pytestmark = pytest.mark.root


def test_snapshot_of_a_node(topo):
    with LiveProbe() as p:
        assert sorted(p.namespaces()) == sorted(topo.namespaces) == scoped_namespaces()
        n1 = p.snapshot(topo.nodes["n1"])
        up = n1.links[topo.node_uplinks["n1"]]
        assert up.kind == "veth" and up.addrs == ["10.255.0.1/24"] and up.state == "UP"
        host = n1.links[topo.pods["pa"].host_veth]
        assert host.group == 0x6670 and host.forwarding == 1 and host.addrs == []
        assert n1.ip_forward == 1 and n1.rp_filter_all == 1
        assert n1.ruleset.chain("filter", "FORWARD").policy == "DROP"
        assert len(n1.ruleset.chain("filter", "FP-FORWARD").rules) == 2
        pa = p.snapshot(topo.pods["pa"].netns)
        assert pa.neighbours[("eth0", "169.254.1.1")] == "PERMANENT"
        assert pa.owner("10.244.1.2").name == "eth0"


def test_veth_peers_across_namespaces_and_bridge_ports(topo):
    with LiveProbe() as p:
        n1 = topo.nodes["n1"]
        assert p.peer(n1, topo.pods["pa"].host_veth) == (topo.pods["pa"].netns, "eth0")
        assert p.peer(topo.pods["pc"].netns, "eth0") == (n1, topo.pods["pc"].host_veth)
        ul, port = p.peer(n1, topo.node_uplinks["n1"])
        assert (ul, port) == (topo.underlay, topo.bridge_ports["n1"])
        assert p.snapshot(ul).links[port].master == "br0"
        assert p.peer(n1, "lo") is None


def test_route_get_answers_like_ip_route_get(topo):
    pa, pb = topo.pods["pa"], topo.pods["pb"]
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    with LiveProbe() as p:
        out = p.route_get(pa.netns, pb.ip, src=pa.ip)
        assert (out.ok, out.type, out.oif, out.gateway) == (True, "unicast", "eth0", "169.254.1.1")
        fwd = p.route_get(n1, pb.ip, src=pa.ip, iif=pa.host_veth)
        assert (fwd.oif, fwd.gateway) == (topo.node_uplinks["n1"], "10.255.0.2")
        assert fwd.answer() == (f"{pb.ip} from {pa.ip} via 10.255.0.2 dev "
                                f"{topo.node_uplinks['n1']} iif {pa.host_veth}")
        local = p.route_get(pb.netns, pb.ip, src=pa.ip, iif="eth0")
        assert local.type == "local"
        none = p.route_get(n1, "192.0.2.1")
        assert not none.ok and none.errno == errno.ENETUNREACH
    # an asymmetric route back: strict rp_filter makes the kernel refuse it as a martian
    subprocess.run(["ip", "-n", n2, "route", "add", f"{pa.ip}/32", "dev", pb.host_veth], check=True)
    with LiveProbe() as p:
        rp = p.route_get(n2, pb.ip, src=pa.ip, iif=topo.node_uplinks["n2"])
        assert not rp.ok and rp.errno in (errno.EXDEV, errno.EINVAL)
    subprocess.run(["ip", "netns", "exec", n1, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    with LiveProbe() as p:
        off = p.route_get(n1, pb.ip, src=pa.ip, iif=pa.host_veth)
        assert not off.ok and off.errno == errno.EHOSTUNREACH
        assert p.snapshot(n1).links[pa.host_veth].forwarding == 0


def test_a_vanished_namespace_is_named(topo):
    with LiveProbe(["fp-nosuch-ns"]) as p, pytest.raises(NotFound, match="fp-nosuch-ns"):
        p.snapshot("fp-nosuch-ns")


def test_proc_net_tcp_listeners_are_parsed():
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
            "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
            "   1: 0201F40A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
            "   2: 0201F40A:0050 0301F40A:D431 01 00000000:00000000 00:00000000 00000000     0\n")
    assert tcp_listeners(text) == {("0.0.0.0", 8080), ("10.244.1.2", 80)}
