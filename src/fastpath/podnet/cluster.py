"""The demo cluster's model and its state: what other packages read (trace, bgp, accel,
proxy) to find nodes and pods.

    from fastpath.podnet import cluster
    c = cluster.load()               # None when this instance has no cluster
    c.nodes / c.pods                 # lists, by name
    c.node("node1"), c.pod("node1-pod1")   # NotFound naming the thing
    n.netns, n.underlay_ip, n.pod_cidr, n.router_id, n.underlay_ifname ("eth0")
    p.node, p.netns, p.ip, p.host_ifname (in the node netns), p.ifname ("eth0" in the pod)

Topology (everything in network namespaces, nothing in the root one):

    underlay netns  fp-<tag>-underlay : bridge <c.bridge>, one port per node
    node netns      fp-<tag>-nodeN    : eth0 = underlay_ip/prefix on the bridge; IP forwarding;
                                        FORWARD policy DROP + FP-FORWARD; podIP/32 dev <host veth>;
                                        other nodes' pod CIDRs via their underlay_ip (routing backend)
    pod netns       fp-<tag>-pod-NAME : eth0 = podIP/32, default via 169.254.1.1 (see plan.py)

State: tables podnet_clusters / podnet_nodes / podnet_pods in the fastpath state database,
keyed by the instance scope (fastpath.naming.scope()), so two instances sharing one
state dir never see each other's clusters. Pod addresses are leases of
fastpath.podnet.ipam in pool = the node's pod CIDR, owner "pod/<name>".
A cluster row's `phase` is "building" while `fastpath up` runs and "ready" after it.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field

from fastpath import naming, state
from fastpath.errors import NotFound

SCHEMA_VERSION = 1
DDL = """
CREATE TABLE IF NOT EXISTS podnet_clusters (
  scope TEXT PRIMARY KEY, underlay TEXT NOT NULL, underlay_netns TEXT NOT NULL,
  bridge TEXT NOT NULL, pod_supernet TEXT NOT NULL, routing TEXT NOT NULL,
  phase TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS podnet_nodes (
  scope TEXT NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL, netns TEXT NOT NULL,
  underlay_ip TEXT NOT NULL, underlay_ifname TEXT NOT NULL, bridge_port TEXT NOT NULL,
  pod_cidr TEXT NOT NULL, router_id TEXT NOT NULL,
  PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS podnet_pods (
  scope TEXT NOT NULL, name TEXT NOT NULL, node TEXT NOT NULL, netns TEXT NOT NULL,
  ip TEXT, host_ifname TEXT NOT NULL, ifname TEXT NOT NULL, phase TEXT NOT NULL,
  created REAL NOT NULL,
  PRIMARY KEY (scope, name))
"""

OWNER_PREFIX = "pod/"


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    netns: str
    underlay_ip: str
    underlay_prefixlen: int
    underlay_ifname: str       # in the node netns
    bridge_port: str           # the peer, in the underlay netns
    pod_cidr: str
    router_id: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    netns: str
    ip: str | None
    host_ifname: str
    ifname: str
    phase: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cluster:
    scope: str
    underlay: str
    underlay_netns: str
    bridge: str
    pod_supernet: str
    routing: str
    phase: str
    created: float
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        names = ", ".join(n.name for n in self.nodes) or "none"
        raise NotFound(f"node {name} does not exist (nodes: {names})")

    def pod(self, name: str) -> Pod:
        for p in self.pods:
            if p.name == name:
                return p
        raise NotFound(f"pod {name} does not exist")

    def pods_on(self, node: str) -> list[Pod]:
        return [p for p in self.pods if p.node == node]

    def pod_by_ip(self, ip: str) -> Pod | None:
        return next((p for p in self.pods if p.ip == ip), None)

    def node_of_ip(self, ip: str) -> Node | None:
        """The node whose pod CIDR holds `ip`."""
        a = ipaddress.ip_address(ip)
        return next((n for n in self.nodes if a in ipaddress.ip_network(n.pod_cidr)), None)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("nodes", "pods")}
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["pods"] = [p.to_dict() for p in self.pods]
        return d


def connect() -> sqlite3.Connection:
    conn = state.connect()
    state.ensure_schema(conn, "podnet.cluster", SCHEMA_VERSION, DDL)
    return conn


def load_existing(conn: sqlite3.Connection | None = None) -> Cluster:
    """This instance's cluster, which the caller has just made or found: NotFound if it is
    gone (another `fastpath down` ran meanwhile)."""
    c = load(conn)
    if c is None:
        raise NotFound("the cluster is gone (a `fastpath down` ran meanwhile)")
    return c


def load(conn: sqlite3.Connection | None = None, scope: str | None = None) -> Cluster | None:
    """This instance's cluster with its nodes and pods (pods being made included, phase
    "creating"), or None."""
    conn = conn or connect()
    scope = naming.scope() if scope is None else scope
    row = conn.execute("SELECT * FROM podnet_clusters WHERE scope=?", (scope,)).fetchone()
    if not row:
        return None
    c = Cluster(**{k: row[k] for k in row.keys()})
    prefix = ipaddress.ip_network(c.underlay).prefixlen
    for r in conn.execute("SELECT * FROM podnet_nodes WHERE scope=? ORDER BY idx", (scope,)):
        c.nodes.append(Node(name=r["name"], index=r["idx"], netns=r["netns"],
                            underlay_ip=r["underlay_ip"], underlay_prefixlen=prefix,
                            underlay_ifname=r["underlay_ifname"], bridge_port=r["bridge_port"],
                            pod_cidr=r["pod_cidr"], router_id=r["router_id"]))
    order = {n.name: n.index for n in c.nodes}
    pods = [Pod(name=r["name"], node=r["node"], netns=r["netns"], ip=r["ip"],
                host_ifname=r["host_ifname"], ifname=r["ifname"], phase=r["phase"])
            for r in conn.execute("SELECT * FROM podnet_pods WHERE scope=?", (scope,))]
    c.pods = sorted(pods, key=lambda p: (order.get(p.node, 0), _natural(p.name)))
    return c


def require(conn: sqlite3.Connection | None = None) -> Cluster:
    c = load(conn)
    if c is None:
        raise NotFound(f"no cluster in instance scope {naming.scope()}* (run: fastpath up)")
    return c


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


# ---- writers (used by fastpath.podnet.build) -------------------------------------------

def insert_cluster(conn, *, underlay: str, underlay_netns: str, bridge: str, pod_supernet: str,
                   routing: str) -> bool:
    """Claim this scope for a new cluster; False if one exists (made or being made)."""
    with state.transaction(conn):
        if conn.execute("SELECT 1 FROM podnet_clusters WHERE scope=?", (naming.scope(),)).fetchone():
            return False
        conn.execute("INSERT INTO podnet_clusters VALUES (?, ?, ?, ?, ?, ?, 'building', ?)",
                     (naming.scope(), underlay, underlay_netns, bridge, pod_supernet, routing, time.time()))
    return True


def set_phase(conn, phase: str) -> None:
    conn.execute("UPDATE podnet_clusters SET phase=? WHERE scope=?", (phase, naming.scope()))


def insert_node(conn, n: Node) -> None:
    conn.execute("INSERT INTO podnet_nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (naming.scope(), n.name, n.index, n.netns, n.underlay_ip, n.underlay_ifname,
                  n.bridge_port, n.pod_cidr, n.router_id))


def delete_node(conn, name: str) -> None:
    conn.execute("DELETE FROM podnet_nodes WHERE scope=? AND name=?", (naming.scope(), name))


def delete_pod(conn, name: str) -> None:
    conn.execute("DELETE FROM podnet_pods WHERE scope=? AND name=?", (naming.scope(), name))


def forget(conn) -> None:
    """Drop this scope's cluster, nodes and pods (IPAM leases: Ipam.forget_space)."""
    with state.transaction(conn):
        for t in ("podnet_pods", "podnet_nodes", "podnet_clusters"):
            conn.execute(f"DELETE FROM {t} WHERE scope=?", (naming.scope(),))
