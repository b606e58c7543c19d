"""The cluster's objects on a KvStore: open a datastore by URL, read a View, and the
writes that need care (registration, block claims) done with compare-and-swap.

URLs: `sqlite:///path/cluster.db` (or `sqlite://`, the state dir's cluster.db: the
default), `etcd://host:port[,host:port...]`. FASTPATH_DATASTORE sets the default.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from fastpath import naming, state
from fastpath.cluster import alloc
from fastpath.cluster.etcd_kv import EtcdKv, parse_endpoints
from fastpath.cluster.kv import BadDatastoreUrl, KvStore
from fastpath.cluster.objects import (
    ROOT,
    Alive,
    BgpConfig,
    Block,
    Conflict,
    Node,
    Peer,
    Pod,
    Pool,
    Service,
    View,
    block_key,
    check_node,
    decode,
    encode,
    key,
)
from fastpath.cluster.sqlite_kv import SqliteKv
from fastpath.errors import FastpathError, NotFound
from fastpath.kernel import proc
from fastpath.kernel.files import atomic_write

DEFAULT_FILE = "cluster.db"
HEALTH_TIMEOUT = 1.0   # seconds for one member's answer in `health`


def instance_record() -> Path:
    """Where a set-up (the demo's `up`) records this instance's datastore, when it is not
    the default: {"url": ..., "netns": the netns to reach it from, or null}."""
    return state.state_dir() / f"datastore-{naming.scope().rstrip('-')}.json"


def record_instance_datastore(url: str, netns: str | None) -> None:
    path = instance_record()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps({"url": url, "netns": netns}))


def forget_instance_datastore() -> None:
    instance_record().unlink(missing_ok=True)


def _recorded() -> tuple[str, str | None] | None:
    try:
        d = json.loads(instance_record().read_text())
        return str(d["url"]), d.get("netns")
    except (FileNotFoundError, ValueError, KeyError):
        return None


def default_file() -> Path:
    """The embedded datastore of this state dir and instance: cluster.db, or
    cluster-TAG.db with FASTPATH_INSTANCE=TAG (two demo clusters on one machine keep two)."""
    tag = naming.instance()
    return state.state_dir() / (f"cluster-{tag}.db" if tag else DEFAULT_FILE)


def default_url() -> str:
    """FASTPATH_DATASTORE, else the instance's recorded one, else the embedded SQLite."""
    env = os.environ.get("FASTPATH_DATASTORE")
    if env:
        return env
    rec = _recorded()
    return rec[0] if rec else f"sqlite://{default_file()}"


def remove_default_file() -> list[str]:
    """Delete the embedded datastore's files (the demo's `down`: it owns that one)."""
    out = []
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(default_file()) + suffix)
        if f.exists():
            f.unlink()
            out.append(str(f))
    return out


def open_kv(url: str | None = None) -> KvStore:
    url = url or default_url()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        path = url.split("://", 1)[1] or str(default_file())
        return SqliteKv(path)
    if scheme == "etcd":
        rec = _recorded()
        return EtcdKv(url, netns=rec[1] if rec and rec[0] == url else None)
    raise BadDatastoreUrl(f"unknown datastore {url!r}",
                          hint="use sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT...]")


def health(url: str | None = None) -> dict:
    """Whether the datastore answers, member by member for etcd (a linearizable read on
    each, so a member cut off from quorum counts as down): {"url", "ok", "members":
    [{"endpoint", "ok", "error"}]}. `ok` is true only when every member answers."""
    url = url or default_url()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    endpoints = parse_endpoints(url) if scheme == "etcd" else [url]
    rec = _recorded()
    members = []
    for ep in endpoints:
        try:
            kv = (EtcdKv("etcd://" + ep.removeprefix("http://"), timeout=HEALTH_TIMEOUT,
                         netns=rec[1] if rec and rec[0] == url else None)
                  if scheme == "etcd" else open_kv(url))
        except FastpathError as e:
            members.append({"endpoint": ep, "ok": False, "error": str(e)})
            continue
        try:
            kv.revision()
            members.append({"endpoint": ep, "ok": True, "error": None})
        except FastpathError as e:
            members.append({"endpoint": ep, "ok": False, "error": e.msg})
        finally:
            kv.close()
    return {"url": url, "ok": all(m["ok"] for m in members), "members": members}


class ClusterStore:
    def __init__(self, kv: KvStore) -> None:
        self.kv = kv

    @classmethod
    def open(cls, url: str | None = None) -> "ClusterStore":
        return cls(open_kv(url))

    def close(self) -> None:
        self.kv.close()

    def __enter__(self) -> "ClusterStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def view(self) -> View:
        kvs, _ = self.kv.list(ROOT)
        return View.of([(k.key, k.value) for k in kvs])

    # ---- nodes ---------------------------------------------------------------------------

    def register(self, node: Node, lease: int) -> Node:
        """Write the node's registration and its `alive` key on `lease`, after checking
        it clashes with nothing (objects.check_node). A configured pod CIDR is also
        claimed as a block, so two nodes configured with one CIDR cannot both win."""
        view = self.view()
        check_node(view, node, own_lease=lease)
        if node.pod_cidr:
            self.claim(node.pod_cidr, node.name, pool="")
        prev = self.kv.get(key("nodes", node.name))
        if prev is None:
            if not self.kv.create(key("nodes", node.name), encode(node)):
                raise Conflict(f"node {node.name} was registered by another agent meanwhile")
        elif prev.value != encode(node):
            if not self.kv.replace(key("nodes", node.name), encode(node), prev.mod_revision):
                raise Conflict(f"node {node.name} changed meanwhile; try again")
        alive = Alive(name=node.name, lease=lease, pid=os.getpid(), host=socket.gethostname(),
                      started=time.time(), boot_id=proc.boot_id(),
                      starttime=proc.starttime(os.getpid()) or 0)
        cur = self.kv.get(key("alive", node.name))
        if cur is not None and decode(Alive, cur.value).lease != lease:
            # check_node saw no live holder, so this key is on a lease that just expired
            self.kv.delete(key("alive", node.name), cur.mod_revision)
        self.kv.put(key("alive", node.name), encode(alive), lease=lease)
        return node

    def claim(self, cidr: str, node: str, pool: str) -> bool:
        """Take block `cidr` for `node` (True), or find it already ours (True); False if
        another node holds it."""
        k = block_key(cidr)
        if self.kv.create(k, encode(Block(cidr=cidr, node=node, pool=pool))):
            return True
        cur = self.kv.get(k)
        if cur is not None and decode(Block, cur.value).node == node:
            return True
        owner = decode(Block, cur.value).node if cur else "?"
        if pool == "":
            raise Conflict(f"pod CIDR {cidr} of node {node} is already node {owner}'s")
        return False

    def allocate_block(self, node: str, pool_name: str | None = None) -> str:
        """The node's block: one it holds already, else the first free one it wins."""
        view = self.view()
        held = view.node_blocks(node)
        if held:
            return held[0]
        if pool_name and pool_name not in view.pools:
            raise NotFound(f"IP pool {pool_name} does not exist",
                           hint=f"pools: {', '.join(sorted(view.pools)) or 'none'}")
        pools = [view.pools[pool_name]] if pool_name else [view.pools[p] for p in sorted(view.pools)]
        if not pools:
            raise NotFound("no IP pool to allocate a pod CIDR from",
                           hint="give the agent --pod-cidr, or add a pool")
        configured = [n.pod_cidr for n in view.nodes.values() if n.pod_cidr and n.name != node]
        for pool in pools:
            for _attempt in range(64):
                taken = set(self.view().blocks)
                cand = next(alloc.candidates(pool, taken, configured), None)
                if cand is None:
                    break
                if self.claim(cand, node, pool.name):
                    return cand
        raise FastpathError(f"every block of pool(s) {', '.join(p.name for p in pools)} is taken",
                            op=f"allocate a pod CIDR for node {node}")

    def release_blocks(self, node: str) -> list[str]:
        out = []
        for cidr in self.view().node_blocks(node):
            self.kv.delete(block_key(cidr))
            out.append(cidr)
        return out

    def delete_node(self, name: str) -> bool:
        view = self.view()
        if name not in view.nodes:
            return False
        if name in view.alive:
            raise Conflict(f"node {name} has a live agent (pid {view.alive[name].pid}); stop it first")
        for (node, pod) in list(view.pods):
            if node == name:
                self.kv.delete(key("pods", node, pod))
        self.release_blocks(name)
        return self.kv.delete(key("nodes", name))

    # ---- the rest: plain puts and deletes ---------------------------------------------

    def put_pool(self, pool: Pool) -> None:
        self.kv.put(key("pools", pool.validate().name), encode(pool))

    def put_service(self, svc: Service, replace: bool = False) -> None:
        svc.validate()
        if replace:
            self.kv.put(key("services", svc.name), encode(svc))
            return
        clash = next((s for s in self.view().services.values() if s.listen == svc.listen), None)
        if clash is not None:
            raise Conflict(f"service {clash.name} already listens on {svc.listen}")
        if not self.kv.create(key("services", svc.name), encode(svc)):
            raise Conflict(f"service {svc.name} already exists")

    def del_service(self, name: str) -> bool:
        return self.kv.delete(key("services", name))

    def put_peer(self, peer: Peer) -> None:
        peer.validate()
        if not self.kv.create(key("peers", peer.name), encode(peer)):
            raise Conflict(f"peer {peer.name} already exists")

    def del_peer(self, name: str) -> bool:
        return self.kv.delete(key("peers", name))

    def put_pod(self, pod: Pod) -> None:
        self.kv.put(key("pods", pod.node, pod.name), encode(pod))

    def del_pod(self, node: str, name: str) -> bool:
        return self.kv.delete(key("pods", node, name))

    def set_bgp(self, cfg: BgpConfig) -> None:
        self.kv.put(ROOT + "config/bgp", encode(cfg))
