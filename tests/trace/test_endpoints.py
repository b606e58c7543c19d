"""Names -> endpoints and the routing-backend seam, on a cluster model built in memory."""

import pytest

from fastpath.errors import NotFound, UsageError
from fastpath.podnet import cluster as pc
from fastpath.podnet import routing
from fastpath.trace import endpoints, path

from .fakes import cluster as machine


def model(routing_name="static") -> pc.Cluster:
    c = pc.Cluster(scope="fp-t-", underlay="10.255.0.0/24", underlay_netns="ul", bridge="br0",
                   pod_supernet="10.244.0.0/16", routing=routing_name, phase="ready", created=0)
    for i, ns in ((1, "n1"), (2, "n2")):
        c.nodes.append(pc.Node(name=f"node{i}", index=i, netns=ns, underlay_ip=f"10.255.0.{i}",
                               underlay_prefixlen=24, underlay_ifname="ul0",
                               bridge_port=f"port-n{i}", pod_cidr=f"10.244.{i}.0/24",
                               router_id=f"10.255.0.{i}"))
    for name, node, ns, ip in (("a", "node1", "pa", "10.244.1.2"), ("c", "node1", "pc", "10.244.1.3"),
                               ("b", "node2", "pb", "10.244.2.2")):
        c.pods.append(pc.Pod(name=name, node=node, netns=ns, ip=ip, host_ifname=f"v-{ns}",
                             ifname="eth0", phase="ready"))
    return c


def test_labels_and_resolution():
    m, _ = machine()
    w = endpoints.world(model())
    assert w.labels["n1"] == "node node1" and w.labels["pb"] == "pod b" and w.labels["ul"] == "underlay"
    assert w.namespaces == ["ul", "n1", "n2", "pa", "pc", "pb"]
    a = endpoints.resolve("a", m, w, role="source")
    assert (a.ip, a.netns, a.label, a.node) == ("10.244.1.2", "pa", "pod a", "node1")
    assert endpoints.resolve("10.244.2.2", m, w, role="destination").label == "pod b"
    n = endpoints.resolve("node2", m, w, role="destination")
    assert (n.ip, n.netns) == ("10.255.0.2", "n2")
    assert endpoints.resolve("n1", m, w, role="source").ip == "10.255.0.1"   # a netns name
    outside = endpoints.resolve("192.0.2.7", m, w, role="destination")
    assert outside.netns is None
    with pytest.raises(NotFound, match="source 192.0.2.7 is not an address"):
        endpoints.resolve("192.0.2.7", m, w, role="source")
    with pytest.raises(NotFound, match="unknown destination 'zz'.*pods: a, c, b"):
        endpoints.resolve("zz", m, w, role="destination")


def test_without_a_cluster_addresses_and_netns_still_resolve():
    m, _ = machine()
    w = endpoints.world(None)
    assert w.namespaces is None
    assert endpoints.resolve("10.244.1.3", m, w, role="source").netns == "pc"
    with pytest.raises(NotFound, match="no cluster here"):
        endpoints.resolve("a", m, w, role="source")


def _no_cross_route(m):
    m.routes["n1"] = [r for r in m.routes["n1"] if r.dst != "10.244.2.0/24"]


def test_static_explainer_names_the_missing_route():
    m, _ = machine()
    _no_cross_route(m)
    w = endpoints.world(model())
    src = endpoints.resolve("a", m, w, role="source")
    dst = endpoints.resolve("b", m, w, role="destination")
    tr = path.walk(m, src, dst, labels=w.labels, nodes=w.nodes, explainers=w.explainers)
    assert tr.cause.line == ("no route to 10.244.2.2 in node node1 (Network is unreachable): "
                             "node1 has no route for node2's pod CIDR 10.244.2.0/24 "
                             "(expected via 10.255.0.2, static routing)")


class SessionAware:
    """What a BGP backend provides: explain_missing_route(cluster, node, peer, dst)."""
    name = "fake"
    calls = []

    def explain_missing_route(self, cluster, node, peer, dst):
        self.calls.append((node.name, peer.name if peer else None, dst))
        return f"the BGP session from {node.name} to {peer.name} is down"


def test_a_routing_backend_explains_first(monkeypatch):
    monkeypatch.setattr(routing, "get", lambda name=None: SessionAware())
    m, _ = machine()
    _no_cross_route(m)
    w = endpoints.world(model("fake"))
    tr = path.walk(m, endpoints.resolve("a", m, w, role="source"),
                   endpoints.resolve("b", m, w, role="destination"),
                   labels=w.labels, nodes=w.nodes, explainers=w.explainers)
    assert tr.cause.kind == path.NO_ROUTE
    assert tr.cause.line.endswith("(Network is unreachable): the BGP session from node1 to "
                                  "node2 is down")
    assert SessionAware.calls == [("node1", "node2", "10.244.2.2")]


def test_a_backend_without_an_explainer_or_unavailable_is_fine(monkeypatch):
    def unavailable(name=None):
        raise UsageError(f"unknown routing backend {name!r}")
    monkeypatch.setattr(routing, "get", unavailable)
    w = endpoints.world(model("gone"))
    assert len(w.explainers) == 1  # the static one
