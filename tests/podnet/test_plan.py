"""Pure planning: pod wiring, cluster layout, overlaps, static routes, names."""

from __future__ import annotations

import ipaddress

import pytest

from fastpath import naming
from fastpath.errors import UsageError
from fastpath.podnet import build, plan, sweep
from fastpath.podnet.check import _checksum, echo_request, parse_echo_reply


def test_pod_wiring_routes_and_defaults():
    w = plan.PodWiring.make(host_ifname="fpabc", address="10.244.1.5")
    assert str(w.address) == "10.244.1.5/32" and not w.noprefixroute
    assert w.pod_routes() == [{"dst": "169.254.1.1/32", "scope": "link"},
                              {"dst": "0.0.0.0/0", "gateway": "169.254.1.1"}]
    assert w.host_routes() == [{"dst": "10.244.1.5/32", "scope": "link"}]
    assert w.devgroup == plan.POD_DEVGROUP and w.mtu == 1500
    assert plan.PodWiring.make(host_ifname="x", address="10.0.0.5/24").noprefixroute


@pytest.mark.parametrize("kw", [
    {"host_ifname": "a" * 16, "address": "10.0.0.2"},
    {"host_ifname": "ok", "address": "10.0.0.300"},
    {"host_ifname": "ok", "address": "169.254.1.1"},
    {"host_ifname": "ok", "address": "10.0.0.2", "mtu": 20},
])
def test_pod_wiring_rejects_bad_input(kw):
    with pytest.raises(UsageError):
        plan.PodWiring.make(**kw)


def test_plan_cluster_layout():
    p = plan.plan_cluster(3, 2)
    assert [n.name for n in p.nodes] == ["node1", "node2", "node3"]
    assert [str(n.pod_cidr) for n in p.nodes] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    assert [str(n.underlay_ip) for n in p.nodes] == ["10.255.0.1", "10.255.0.2", "10.255.0.3"]
    assert p.nodes[0].router_id == "10.255.0.1"
    assert p.pods[:2] == (("node1-pod1", "node1"), ("node1-pod2", "node1"))
    assert len(p.pods) == 6


def test_overlaps_are_named():
    u = ipaddress.ip_network("10.255.0.0/24")
    with pytest.raises(UsageError, match="pod CIDR 10.255.0.0/25 of node n2 overlaps the underlay"):
        plan.check_overlaps(u, {"n1": ipaddress.ip_network("10.1.0.0/24"),
                                "n2": ipaddress.ip_network("10.255.0.0/25")})
    with pytest.raises(UsageError, match="overlaps pod CIDR 10.1.0.0/16 of node b"):
        plan.check_overlaps(u, {"a": ipaddress.ip_network("10.1.2.0/24"),
                                "b": ipaddress.ip_network("10.1.0.0/16")})
    with pytest.raises(UsageError, match="overlaps the underlay"):
        plan.plan_cluster(2, 1, underlay="10.244.5.0/24")
    with pytest.raises(UsageError):
        plan.plan_cluster(0, 1)
    with pytest.raises(UsageError):
        plan.plan_cluster(2, 1, underlay="10.0.0.1/24")


def test_static_routes_skip_self():
    cidrs = {f"node{i}": (ipaddress.ip_network(f"10.244.{i}.0/24"), ipaddress.ip_address(f"10.255.0.{i}"))
             for i in (1, 2, 3)}
    got = plan.static_routes("node2", cidrs)
    assert [(str(c), str(v)) for c, v in got] == [("10.244.1.0/24", "10.255.0.1"),
                                                  ("10.244.3.0/24", "10.255.0.3")]


def test_names_are_scoped_and_short(monkeypatch, instance):
    assert build.pod_netns("node1-pod1") == f"fp-{instance}-pod-node1-pod1"
    h = build.pod_host_ifname("node1-pod1")
    assert len(h) <= 15 and h.startswith("fp")
    assert h != build.pod_host_ifname("node1-pod2")
    monkeypatch.setenv("FASTPATH_INSTANCE", "other")
    assert build.pod_host_ifname("node1-pod1") != h
    with pytest.raises(UsageError):
        plan.check_name("pod", "Bad_Name")


def test_sweep_recognises_only_its_own_netns(instance):
    s = naming.scope()
    assert sweep.ours(s + "underlay") and sweep.ours(s + "node3") and sweep.ours(s + "pod-x")
    assert not sweep.ours(s + "cni-x") and not sweep.ours("fp-zzzz-node1") and not sweep.ours(s + "nodes")
    assert sweep.ours("custom", {"custom"})


def test_icmp_echo_roundtrip_encoding():
    req = echo_request(0x1234, 1, b"abc")
    assert _checksum(req) == 0
    ip = bytes([0x45]) + bytes(11) + bytes([10, 0, 0, 9]) + bytes([10, 0, 0, 1])
    reply = bytes([0]) + req[1:]
    assert parse_echo_reply(ip + reply) == ("10.0.0.9", 0x1234, 1)
    assert parse_echo_reply(ip + req) is None
