"""The datastore seam, the same tests on both backends: SQLite and a real 3-member etcd."""

from __future__ import annotations

import multiprocessing
import secrets
import time

import pytest
import requests

from fastpath.cluster.etcd_kv import EtcdKv
from fastpath.cluster.kv import Compacted, Unavailable
from fastpath.cluster.mirror import Mirror
from fastpath.cluster.objects import Conflict, Node, Pool
from fastpath.cluster.sqlite_kv import SqliteKv
from fastpath.cluster.store import ClusterStore, open_kv


@pytest.fixture(params=["sqlite", "etcd"])
def kv(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteKv(tmp_path / "cluster.db", history=50)
    else:
        s = EtcdKv(request.getfixturevalue("etcd_cluster").url)
    s.prefix = f"/t{secrets.token_hex(4)}/"  # type: ignore[attr-defined]
    yield s
    s.close()


def test_compare_and_swap(kv):
    p = kv.prefix
    assert kv.create(p + "a", b"1")
    assert not kv.create(p + "a", b"2")
    cur = kv.get(p + "a")
    assert cur.value == b"1" and cur.create_revision == cur.mod_revision
    assert not kv.replace(p + "a", b"3", cur.mod_revision - 1)
    assert kv.replace(p + "a", b"3", cur.mod_revision)
    after = kv.get(p + "a")
    assert after.value == b"3" and after.create_revision == cur.create_revision
    assert not kv.delete(p + "a", cur.mod_revision)
    assert kv.delete(p + "a", after.mod_revision)
    assert kv.get(p + "a") is None and not kv.delete(p + "a")


def test_list_is_a_prefix_at_a_revision(kv):
    p = kv.prefix
    kv.put(p + "x/1", b"1")
    kv.put(p + "x/2", b"2")
    kv.put(p + "y", b"3")
    kvs, rev = kv.list(p + "x/")
    assert [k.key for k in kvs] == [p + "x/1", p + "x/2"]
    assert rev >= kvs[-1].mod_revision and rev == kv.revision()


def test_watch_delivers_in_order_and_resumes_where_it_stopped(kv):
    p = kv.prefix
    start = kv.revision() + 1
    w = kv.watch(p, start)
    kv.put(p + "a", b"1")
    kv.put(kv.prefix.rstrip("/") + "-other", b"not ours")
    kv.put(p + "b", b"2")
    kv.delete(p + "a")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        got += w.next(0.5)
    w.close()
    assert [(e.kind, e.key) for e in got] == [("put", p + "a"), ("put", p + "b"), ("delete", p + "a")]
    assert [e.revision for e in got] == sorted(e.revision for e in got)
    # a new watch from the middle sees the rest, and only the rest
    w = kv.watch(p, got[1].revision)
    rest = []
    while len(rest) < 2 and time.monotonic() < deadline:
        rest += w.next(0.5)
    w.close()
    assert [(e.kind, e.key) for e in rest] == [("put", p + "b"), ("delete", p + "a")]


def test_a_lease_that_is_not_renewed_takes_its_keys(kv):
    p = kv.prefix
    lease = kv.grant(1)
    kv.put(p + "alive", b"x", lease=lease)
    kept = kv.grant(1)
    kv.put(p + "kept", b"x", lease=kept)
    w = kv.watch(p, kv.revision() + 1)
    deadline = time.monotonic() + 6
    while kv.get(p + "alive") is not None and time.monotonic() < deadline:
        assert kv.keepalive(kept) == 1
        time.sleep(0.2)
    assert kv.get(p + "alive") is None, "the key outlived its lease"
    assert kv.get(p + "kept") is not None, "a renewed lease lost its key"
    evs = []
    while not evs and time.monotonic() < deadline:
        evs = w.next(0.5)
    w.close()
    assert ("delete", p + "alive") in [(e.kind, e.key) for e in evs]
    assert kv.keepalive(lease) == 0
    kv.revoke(kept)
    assert kv.get(p + "kept") is None


def _compact(kv, upto: int) -> None:
    if isinstance(kv, SqliteKv):
        for i in range(120):  # the sqlite store keeps its last 50 changes here
            kv.put(kv.prefix + "churn", str(i).encode())
    else:
        ep = kv.endpoints[kv.current]
        requests.post(f"{ep}/v3/kv/compaction", json={"revision": str(upto), "physical": True},
                      timeout=5).raise_for_status()


def test_a_compacted_watch_says_so_and_the_mirror_relists(kv):
    p = kv.prefix
    kv.put(p + "gone", b"1")
    m = Mirror(kv, p)
    m.sync()
    old_rev = m.revision
    kv.delete(p + "gone")
    kv.put(p + "new", b"2")
    _compact(kv, kv.revision())
    w = kv.watch(p, old_rev + 1)
    with pytest.raises(Compacted):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            w.next(0.5)
    w.close()
    changed = set()
    deadline = time.monotonic() + 5
    while p + "gone" not in changed and time.monotonic() < deadline:
        changed |= m.follow(0.5)
    m.close()
    assert m.relists == 1
    assert {p + "gone", p + "new"} <= changed
    assert p + "gone" not in m.data and m.data[p + "new"].value == b"2"


def test_cluster_store_registration_and_conflicts(kv, monkeypatch):
    monkeypatch.setattr("fastpath.cluster.objects.ROOT", kv.prefix)
    monkeypatch.setattr("fastpath.cluster.store.ROOT", kv.prefix)
    cs = ClusterStore(kv)
    lease = kv.grant(30)
    cs.register(Node("node1", "10.0.0.1/24", "10.244.1.0/24"), lease)
    before = kv.revision()
    other = kv.grant(30)
    with pytest.raises(Conflict, match="live agent"):
        cs.register(Node("node1", "10.0.0.5/24", "10.244.5.0/24"), other)
    with pytest.raises(Conflict, match="10.244.1.0/24"):
        cs.register(Node("node2", "10.0.0.2/24", "10.244.1.0/25"), other)
    with pytest.raises(Conflict, match="router id 10.0.0.1"):
        cs.register(Node("node2", "10.0.0.2/24", "10.244.2.0/24", router_id="10.0.0.1"), other)
    assert kv.revision() == before, "a refused registration wrote something"
    # the same agent again (a restart that kept its lease): no conflict
    cs.register(Node("node1", "10.0.0.1/24", "10.244.1.0/24"), lease)
    v = cs.view()
    assert set(v.alive) == {"node1"} and v.node_blocks("node1") == ["10.244.1.0/24"]
    kv.revoke(lease)
    kv.revoke(other)


def _race(url: str, prefix: str, node: str, out) -> None:
    import fastpath.cluster.objects as objects
    import fastpath.cluster.store as store
    objects.ROOT = store.ROOT = prefix
    with ClusterStore.open(url) as cs:
        out.put((node, cs.allocate_block(node, "pool")))


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_agents_racing_for_blocks_never_share_one(backend, tmp_path, request, monkeypatch):
    """Eight processes at once, each a node taking a block from a pool of eight."""
    url = (f"sqlite://{tmp_path}/cluster.db" if backend == "sqlite"
           else request.getfixturevalue("etcd_cluster").url)
    prefix = f"/race{secrets.token_hex(4)}/"
    monkeypatch.setattr("fastpath.cluster.objects.ROOT", prefix)
    monkeypatch.setattr("fastpath.cluster.store.ROOT", prefix)
    with ClusterStore.open(url) as cs:
        cs.put_pool(Pool("pool", "10.244.0.0/21", 24))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, prefix, f"node{i}", out)) for i in range(8)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    assert len(got) == 8 and len(set(got.values())) == 8, got
    with ClusterStore.open(url) as cs:
        owners = {b.cidr: b.node for b in cs.view().blocks.values()}
    assert owners == {cidr: node for node, cidr in got.items()}


def test_one_member_down_keeps_working_and_quorum_loss_is_unavailable(fresh_etcd):
    kv = EtcdKv(fresh_etcd.url, timeout=1.0)
    kv.put("/q/a", b"1")
    fresh_etcd.kill("m0")
    assert kv.put("/q/b", b"2") > 0 and kv.get("/q/a").value == b"1"
    fresh_etcd.kill("m1")
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="no etcd member answered"):
        kv.get("/q/a")
    assert time.monotonic() - t0 < 5, "a lost quorum must be reported, not waited on forever"
    fresh_etcd.restart("m0")
    deadline = time.monotonic() + 20
    while True:
        try:
            assert kv.get("/q/b").value == b"2"
            break
        except Unavailable:
            assert time.monotonic() < deadline, "etcd did not recover with quorum back"
            time.sleep(0.2)
    kv.close()


def test_an_unknown_or_malformed_url_is_one_clear_line():
    from fastpath.cluster.kv import BadDatastoreUrl
    with pytest.raises(BadDatastoreUrl, match="unknown datastore"):
        open_kv("zk://x:1")
    with pytest.raises(BadDatastoreUrl, match="not HOST:PORT"):
        open_kv("etcd://host")


def test_block_allocation_names_a_missing_or_exhausted_pool(tmp_path):
    from fastpath.errors import FastpathError, NotFound
    with ClusterStore.open(f"sqlite://{tmp_path}/cluster.db") as cs:
        with pytest.raises(NotFound, match="no IP pool"):
            cs.allocate_block("node1")
        cs.put_pool(Pool("small", "10.244.0.0/23", 24))
        with pytest.raises(NotFound, match="IP pool big does not exist.*pools: small"):
            cs.allocate_block("node1", "big")
        assert cs.allocate_block("node1", "small") == "10.244.0.0/24"
        assert cs.allocate_block("node1", "small") == "10.244.0.0/24"   # held already
        assert cs.allocate_block("node2", "small") == "10.244.1.0/24"
        with pytest.raises(FastpathError, match="every block of pool\\(s\\) small is taken"):
            cs.allocate_block("node3", "small")
