"""The mesh BIRD was last told about, kept in the state database (table `bgp_mesh`, one row
per instance scope). It is what `node add/del`, `status`, `trace` and `down` read to know
which BIRDs exist and how they are meant to peer, including the route reflector and the
timers chosen at `up`."""

from __future__ import annotations

import json
import sqlite3

from fastpath import naming, state
from fastpath.bgp.model import BgpNode, Mesh, Timers

DDL = """
CREATE TABLE IF NOT EXISTS bgp_mesh (
  scope TEXT PRIMARY KEY,
  mesh  TEXT NOT NULL
)
"""


def _conn(conn: sqlite3.Connection | None) -> sqlite3.Connection:
    conn = conn or state.connect()
    state.ensure_schema(conn, "bgp", 1, DDL)
    return conn


def to_json(mesh: Mesh) -> dict:
    return {"reflector": mesh.reflector, "asn": mesh.asn,
            "timers": mesh.timers.__dict__,
            "nodes": [n.__dict__ for n in mesh.nodes]}


def from_json(d: dict) -> Mesh:
    return Mesh(nodes=tuple(BgpNode(**n) for n in d["nodes"]), reflector=d.get("reflector"),
                asn=d.get("asn", 64512), timers=Timers(**d.get("timers", {})))


def load(conn: sqlite3.Connection | None = None) -> Mesh | None:
    row = _conn(conn).execute("SELECT mesh FROM bgp_mesh WHERE scope=?",
                              (naming.scope(),)).fetchone()
    return from_json(json.loads(row["mesh"])) if row else None


def save(mesh: Mesh, conn: sqlite3.Connection | None = None) -> None:
    _conn(conn).execute("INSERT OR REPLACE INTO bgp_mesh (scope, mesh) VALUES (?, ?)",
                        (naming.scope(), json.dumps(to_json(mesh))))


def forget(conn: sqlite3.Connection | None = None) -> None:
    _conn(conn).execute("DELETE FROM bgp_mesh WHERE scope=?", (naming.scope(),))
