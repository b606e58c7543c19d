import pytest

from fastpath.bgp.model import BgpNode, Mesh, Timers, validate
from fastpath.errors import ConfigError, UsageError


def node(i, **kw):
    d = dict(name=f"node{i}", netns=f"fp-x-node{i}", address=f"10.237.0.{i}",
             pod_cidr=f"10.238.{i}.0/24", router_id=f"10.237.0.{i}")
    d.update(kw)
    return BgpNode(**d)


def mesh(n=3, **kw):
    return Mesh(tuple(node(i) for i in range(1, n + 1)), **kw)


def test_valid_mesh_passes():
    validate(mesh(4))
    validate(mesh(4, reflector="node2"))


@pytest.mark.parametrize("bad, msg", [
    (dict(pod_cidr="10.238.1.0/24"), "already node 'node1'"),
    (dict(router_id="10.237.0.1"), "router id 10.237.0.1 is already node 'node1'"),
    (dict(address="10.237.0.1"), "underlay address 10.237.0.1 is already"),
    (dict(pod_cidr="10.238.0.0/16"), "overlaps node 'node1'"),
    (dict(pod_cidr="10.238.1.128/25"), "overlaps"),
    (dict(pod_cidr="10.238.9.1/24"), "host bits set"),
    (dict(pod_cidr="nonsense"), "not an IPv4 network"),
    (dict(address="10.237.0.300"), "not an IPv4 address"),
    (dict(router_id="0.0.0.0"), "not a usable unicast"),
    (dict(address="224.0.0.5"), "not a usable unicast"),
    (dict(name="Node_9"), "node name"),
    (dict(address="10.238.1.7"), "inside node 'node1'"),
])
def test_conflicts_refused(bad, msg):
    nodes = (node(1), node(2), node(9, **bad))
    with pytest.raises(ConfigError, match=msg):
        validate(Mesh(nodes))


def test_duplicate_name_and_unknown_reflector():
    with pytest.raises(ConfigError, match="defined twice"):
        validate(Mesh((node(1), node(2), node(2, address="10.237.0.9", router_id="10.237.0.9",
                                                pod_cidr="10.238.9.0/24"))))
    with pytest.raises(ConfigError, match="route reflector 'node7'"):
        validate(mesh(2, reflector="node7"))


@pytest.mark.parametrize("t, msg", [
    (Timers(hold=2), "0 or at least 3"),
    (Timers(hold=3, keepalive=3), "below the hold time"),
    (Timers(connect_retry=0), "connect retry"),
    (Timers(error_wait_min=5, error_wait_max=1), "error wait"),
])
def test_bad_timers(t, msg):
    with pytest.raises(ConfigError, match=msg):
        validate(mesh(2, timers=t))


def test_full_mesh_peers_everyone():
    m = mesh(4)
    assert [p.name for p, rr in m.peers("node2")] == ["node1", "node3", "node4"]
    assert all(not rr for _, rr in m.peers("node2"))
    assert len(m.sessions()) == 6


def test_reflector_topology():
    m = mesh(4, reflector="node3")
    assert [(p.name, rr) for p, rr in m.peers("node3")] == [("node1", True), ("node2", True), ("node4", True)]
    assert [(p.name, rr) for p, rr in m.peers("node1")] == [("node3", False)]
    assert m.sessions() == [("node1", "node3"), ("node2", "node3"), ("node3", "node4")]


def test_without_reflector_refused_and_with_node():
    m = mesh(3, reflector="node1")
    with pytest.raises(UsageError, match="route reflector"):
        m.without_node("node1")
    assert [n.name for n in m.without_node("node2").nodes] == ["node1", "node3"]
    assert m.with_node(node(4)).node("node4").pod_cidr == "10.238.4.0/24"
