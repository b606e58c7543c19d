"""The CNI attachments fastpath made, in the state database.

An attachment is keyed as the spec keys it: (network name, container ID, ifname), within
the instance's space (as fastpath.podnet.ipam keeps its leases). A row is written after
the pod is wired and removed after it is unwired, so GC and CHECK know what exists
without walking every namespace. `host_ns` is the inode of the namespace the host side
was wired in: `fastpath down` only deletes links in the namespace it runs in.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from fastpath import naming, state

SCHEMA_VERSION = 2
DDL = """
CREATE TABLE IF NOT EXISTS cni_nodes (
  boot_id TEXT NOT NULL, netns_cookie INTEGER NOT NULL, checked REAL NOT NULL,
  PRIMARY KEY (boot_id, netns_cookie));
CREATE TABLE IF NOT EXISTS cni_attachments (
  space TEXT NOT NULL, network TEXT NOT NULL, container_id TEXT NOT NULL, ifname TEXT NOT NULL,
  address TEXT NOT NULL, host_link TEXT NOT NULL, netns TEXT NOT NULL, host_ns INTEGER,
  ipam TEXT, result TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (space, network, container_id, ifname))
"""


@dataclass
class Attachment:
    network: str
    container_id: str
    ifname: str
    address: str  # "10.244.1.5/32"
    host_link: str
    netns: str
    host_ns: int | None
    ipam: str | None  # delegated plugin type, None for fastpath's own
    result: dict

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)


def ipam_owner(network: str, container_id: str, ifname: str) -> str:
    """The owner string of the pod's lease in fastpath.podnet.ipam."""
    return f"cni/{network}/{container_id}/{ifname}"


class Store:
    def __init__(self, conn=None, space: str | None = None) -> None:
        self.conn = conn or state.connect()
        self.space = naming.scope() if space is None else space
        state.ensure_schema(self.conn, "cni.attachments", SCHEMA_VERSION, DDL)

    @staticmethod
    def exists(conn) -> bool:
        """Whether the plugin ever wrote to this database (readers need not create tables)."""
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                            "name='cni_attachments'").fetchone() is not None

    def _row(self, r) -> Attachment:
        return Attachment(r["network"], r["container_id"], r["ifname"], r["address"],
                          r["host_link"], r["netns"], r["host_ns"], r["ipam"],
                          json.loads(r["result"]))

    def get(self, network: str, container_id: str, ifname: str) -> Attachment | None:
        r = self.conn.execute(
            "SELECT * FROM cni_attachments WHERE space=? AND network=? AND container_id=? AND ifname=?",
            (self.space, network, container_id, ifname)).fetchone()
        return self._row(r) if r else None

    def put(self, a: Attachment) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO cni_attachments (space, network, container_id, ifname, address, "
            "host_link, netns, host_ns, ipam, result, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (self.space, a.network, a.container_id, a.ifname, a.address, a.host_link, a.netns,
             a.host_ns, a.ipam, json.dumps(a.result), time.time()))

    def delete(self, network: str, container_id: str, ifname: str) -> None:
        self.conn.execute(
            "DELETE FROM cni_attachments WHERE space=? AND network=? AND container_id=? AND ifname=?",
            (self.space, network, container_id, ifname))

    def list(self, network: str | None = None) -> list[Attachment]:
        q, args = "SELECT * FROM cni_attachments WHERE space=?", [self.space]
        if network is not None:
            q += " AND network=?"
            args.append(network)
        return [self._row(r) for r in self.conn.execute(q + " ORDER BY created", args).fetchall()]

    def node_checked_at(self, cookie: int) -> float | None:
        """When the node side of netns `cookie` was last made sure of (this boot)."""
        r = self.conn.execute("SELECT checked FROM cni_nodes WHERE boot_id=? AND netns_cookie=?",
                              (boot_id(), cookie)).fetchone()
        return r["checked"] if r else None

    def mark_node_checked(self, cookie: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO cni_nodes (boot_id, netns_cookie, checked) "
                          "VALUES (?, ?, ?)", (boot_id(), cookie, time.time()))

    def sweep(self) -> builtins.list[str]:  # `list` here is the method below
        """Drop every row of the space; delete host links wired in this namespace."""
        removed: builtins.list[str] = []
        here = current_netns_inode()
        rows = self.list()
        links = [a.host_link for a in rows if a.host_ns == here]
        if links:
            with IPRoute() as ipr:
                for name in links:
                    idx = ipr.link_lookup(ifname=name)
                    if idx:
                        ipr.link("del", index=idx[0])
                        removed.append(f"link {name}")
        self.conn.execute("DELETE FROM cni_nodes")
        n = self.conn.execute("DELETE FROM cni_attachments WHERE space=?", (self.space,)).rowcount
        if n:
            removed.append(f"{n} CNI attachment records")
        return removed


def boot_id() -> str:
    # Netns cookies are unique within one boot only.
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def current_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino
