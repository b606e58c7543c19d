"""The cluster's objects, rules and the watch follower's bookkeeping: pure, no store."""

from __future__ import annotations

import pytest

from fastpath.cluster import alloc
from fastpath.cluster.kv import Event, KeyValue, prefix_end
from fastpath.cluster.mirror import Mirror
from fastpath.cluster.objects import (
    Alive,
    Conflict,
    Node,
    Peer,
    Pod,
    Pool,
    Service,
    View,
    check_node,
    decode,
    encode,
    key,
)
from fastpath.errors import ConfigError


def view(**kw) -> View:
    v = View()
    for n in kw.get("nodes", []):
        v.nodes[n.name] = n
    for a in kw.get("alive", []):
        v.alive[a] = Alive(name=a, lease=7, pid=1, host="h", started=0.0)
    return v


N1 = Node("node1", "10.0.0.1/24", "10.244.1.0/24")


@pytest.mark.parametrize("new, clash", [
    (Node("node1", "10.0.0.9/24", "10.244.9.0/24"), "already registered by a live agent"),
    (Node("node2", "10.0.0.2/24", "10.244.1.0/24"), "pod CIDR 10.244.1.0/24 of node node2 is node node1's"),
    (Node("node2", "10.0.0.2/24", "10.244.0.0/16"), "overlaps node node1's 10.244.1.0/24"),
    (Node("node2", "10.0.0.2/24", "10.244.2.0/24", router_id="10.0.0.1"), "router id 10.0.0.1"),
    (Node("node2", "10.0.0.1/24", "10.244.2.0/24", router_id="1.1.1.1"), "underlay address 10.0.0.1"),
])
def test_a_clashing_registration_names_the_clash(new, clash):
    with pytest.raises(Conflict, match=clash):
        check_node(view(nodes=[N1], alive=["node1"]), new)


def test_the_same_node_restarting_is_no_clash():
    check_node(view(nodes=[N1], alive=["node1"]), N1, own_lease=7)   # its own lease
    check_node(view(nodes=[N1]), Node("node1", "10.0.0.1/24", "10.244.1.0/24"))  # lease expired


@pytest.mark.parametrize("bad", [
    Node("Node1", "10.0.0.1/24", None), Node("n", "10.0.0.1", None), Node("n", "10.0.0.1/24", "10.1.0.1/24"),
    Node("n", "127.0.0.1/8", None), Node("n", "10.0.0.1/24", None, asn=0),
])
def test_malformed_nodes_are_refused(bad):
    with pytest.raises(ConfigError):
        bad.validate()


def test_services_take_addresses_or_pods_but_not_both():
    Service("web", "10.96.0.1:80", backends=("10.244.1.2:8080",)).validate()
    Service("web", "10.96.0.1:80", pods="web-", port=8080).validate()
    with pytest.raises(ConfigError, match="one of the two"):
        Service("web", "10.96.0.1:80", backends=("10.244.1.2:8080",), pods="web-", port=1).validate()
    with pytest.raises(ConfigError, match="need --port"):
        Service("web", "10.96.0.1:80", pods="web-").validate()
    with pytest.raises(ConfigError, match="IP:PORT"):
        Service("web", "10.96.0.1", backends=("10.244.1.2:8080",)).validate()


def test_a_peer_password_is_never_shown():
    p = Peer("tor", "10.0.0.254", 65000, password="s3cret").validate()
    assert p.public()["password"] == "(set)"
    assert decode(Peer, encode(p)) == p
    with pytest.raises(ConfigError, match="password"):
        Peer("tor", "10.0.0.254", 65000, password='a"b').validate()


def test_backends_keep_a_dead_agents_pods_until_its_node_is_gone():
    v = view(nodes=[N1, Node("node2", "10.0.0.2/24", "10.244.2.0/24")], alive=["node1"])
    v.pods[("node1", "web-1")] = Pod("node1", "web-1", "10.244.1.2", {"app": "web"})
    v.pods[("node2", "web-2")] = Pod("node2", "web-2", "10.244.2.2", {"app": "web"})
    v.pods[("node1", "db-1")] = Pod("node1", "db-1", "10.244.1.3", {"app": "db"})
    v.pods[("node9", "web-9")] = Pod("node9", "web-9", "10.244.9.2", {"app": "web"})
    by_prefix = Service("web", "10.96.0.1:80", pods="web-", port=80)
    by_label = Service("s", "10.96.0.1:80", selector={"app": "web"}, port=80)
    # node2's agent is dead, its pod is not: it stays (health checks decide); node9 was
    # never registered (or was deleted): its pod is out
    assert v.backends(by_prefix) == ["10.244.1.2:80", "10.244.2.2:80"]
    assert v.backends(by_label) == ["10.244.1.2:80", "10.244.2.2:80"]
    # dead beyond the grace: gone for services
    assert v.backends(by_label, gone={"node2"}) == ["10.244.1.2:80"]
    assert v.dead_nodes() == ["node2"] and [n.name for n in v.routed_nodes()] == ["node1", "node2"]


def test_a_registration_held_by_a_process_dead_on_this_machine_is_no_clash():
    v = view(nodes=[N1])
    v.alive["node1"] = Alive("node1", 7, 4697, "h", 0.0, boot_id="boot-a", starttime=100)
    again = Node("node1", "10.0.0.1/24", "10.244.1.0/24")
    with pytest.raises(Conflict, match="already registered by a live agent"):
        check_node(v, again, own_lease=8)
    gone = Alive.held_by_dead_process
    # on this boot, and pid 4697 no longer runs with that start time: the agent is dead
    check_node(v, again, own_lease=8,
               holder_dead=lambda a: gone(a, "boot-a", lambda pid, start: False))
    # the same pid still runs: a live agent, refused
    with pytest.raises(Conflict):
        check_node(v, again, own_lease=8, holder_dead=lambda a: gone(a, "boot-a", lambda p, s: True))
    # another machine (or boot): only its lease can tell, refused while it holds one
    with pytest.raises(Conflict):
        check_node(v, again, own_lease=8, holder_dead=lambda a: gone(a, "boot-b", lambda p, s: False))


def test_block_candidates_skip_taken_and_configured_ranges():
    pool = Pool("default", "10.244.0.0/22", 24).validate()
    got = list(alloc.candidates(pool, {"10.244.0.0/24"}, ["10.244.2.0/25"]))
    assert got == ["10.244.1.0/24", "10.244.3.0/24"]
    with pytest.raises(ConfigError, match="block size"):
        Pool("p", "10.0.0.0/24", 16).validate()


def test_view_skips_values_it_cannot_read():
    v = View.of([(key("nodes", "node1"), encode(N1)), (key("nodes", "x"), b'{"bogus": 1}'),
                 (key("services", "y"), b"not json")])
    assert list(v.nodes) == ["node1"] and not v.services


def test_prefix_end_is_etcds():
    assert prefix_end("/fastpath/") == b"/fastpath0"
    assert prefix_end("ab") == b"ac"


class _NoStore:
    pass


def _ev(kind, k, rev, v=b"x"):
    return Event(kind=kind, key=k, value=v if kind == "put" else None, revision=rev)


def test_mirror_applies_each_change_once_in_order():
    m = Mirror(_NoStore(), "/p/")  # type: ignore[arg-type]
    assert m.reset([KeyValue("/p/a", b"1", 1, 1)], 3) == {"/p/a"}
    assert m.apply([_ev("put", "/p/b", 4), _ev("delete", "/p/a", 5)]) == {"/p/a", "/p/b"}
    # the same batch again (a reconnect that re-delivers): nothing changes
    assert m.apply([_ev("put", "/p/b", 4, b"old"), _ev("delete", "/p/a", 5)]) == set()
    assert m.data["/p/b"].value == b"x" and m.revision == 5
    # one transaction's events share a revision: all of them apply
    assert m.apply([_ev("put", "/p/c", 6), _ev("put", "/p/d", 6)]) == {"/p/c", "/p/d"}


def test_mirror_relist_reports_the_difference():
    m = Mirror(_NoStore(), "/p/")  # type: ignore[arg-type]
    m.reset([KeyValue("/p/a", b"1", 1, 1), KeyValue("/p/b", b"1", 2, 2)], 2)
    changed = m.reset([KeyValue("/p/b", b"1", 2, 2), KeyValue("/p/c", b"1", 9, 9)], 9)
    assert changed == {"/p/a", "/p/c"}
