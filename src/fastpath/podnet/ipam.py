"""IP address management in SQLite: pools by CIDR, leases owned by strings.

Rules (what a CNI runtime and `fastpath pod add` both rely on):
- One owner holds at most one address per space; asking again returns the same address
  (a retried CNI ADD must not leak a second one). Owners are opaque strings: the CNI
  plugin uses "<container-id>/<ifname>", the demo cluster "pod/<name>".
- Never-used addresses are handed out first, lowest first; a released address is reused
  only when none is left, oldest release first, so a stale peer that still thinks an
  address is someone else's meets it as late as possible (host-local IPAM does the same
  with its last-reserved cursor).
- Excluded: the network address, the IPv4 broadcast address, the pool's first host
  (the conventional gateway; kept free even when the gateway is link-local so that a
  ptp-style gateway can take it), and whatever `reserved` names.
- Concurrent allocators (threads or processes) never get one address twice: each
  allocation is one `BEGIN IMMEDIATE` transaction (fastpath.state.transaction) that
  takes SQLite's write lock before reading.
- A *space* keeps instances apart: the default is the instance scope (fastpath.naming),
  so two demo clusters with the same pod CIDR in one state database do not collide.

Pure logic (offsets, exclusions) is in the functions at the top; `Ipam` is the SQLite edge.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from fastpath import naming, state
from fastpath.errors import AlreadyExists, FastpathError, UsageError

SCHEMA_VERSION = 1
DDL = """
CREATE TABLE IF NOT EXISTS ipam_pools (
  space TEXT NOT NULL, pool TEXT NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY (space, pool));
CREATE TABLE IF NOT EXISTS ipam_leases (
  space TEXT NOT NULL, pool TEXT NOT NULL, offset INTEGER NOT NULL, address TEXT NOT NULL,
  owner TEXT, released_seq INTEGER,
  PRIMARY KEY (space, pool, offset));
CREATE UNIQUE INDEX IF NOT EXISTS ipam_leases_owner ON ipam_leases (space, owner)
  WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS ipam_leases_free ON ipam_leases (space, pool, released_seq)
  WHERE owner IS NULL
"""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PoolExhausted(FastpathError):
    """Every usable address of the pool is leased."""


@dataclass(frozen=True)
class Lease:
    pool: Network
    address: Address
    owner: str

    def interface(self, prefixlen: int | None = None) -> str:
        """"ip/prefix": the pool's prefix by default, /32 (/128) in routing mode."""
        return f"{self.address}/{self.pool.prefixlen if prefixlen is None else prefixlen}"


def parse_pool(cidr: str | Network) -> Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise UsageError(f"invalid pool CIDR {cidr!r}: {e}") from None
    return net


def usable_offsets(pool: Network, reserve_first_host: bool = True) -> tuple[int, int]:
    """(first, last) offsets from the network address that may be leased."""
    n = pool.num_addresses
    if n == 1:
        return (0, 0)
    if n == 2:  # /31 (RFC 3021) and /127: both ends usable
        return (0, 1)
    first = 2 if reserve_first_host else 1
    last = n - 2 if pool.version == 4 else n - 1
    return (first, last)


def reserved_offsets(pool: Network, reserved: Iterable[str]) -> set[int]:
    out = set()
    base = int(pool.network_address)
    for r in reserved:
        a = ipaddress.ip_address(str(r).split("/")[0])
        if a in pool:
            out.add(int(a) - base)
    return out


def capacity(pool: Network, reserved: Iterable[str] = (), reserve_first_host: bool = True) -> int:
    first, last = usable_offsets(pool, reserve_first_host)
    res = {o for o in reserved_offsets(pool, reserved) if first <= o <= last}
    return max(0, last - first + 1 - len(res))


class Ipam:
    """Leases in the fastpath state database (or `conn`), within one `space`."""

    def __init__(self, conn: sqlite3.Connection | None = None, space: str | None = None) -> None:
        self.conn = conn or state.connect()
        self.space = naming.scope() if space is None else space
        # WAL + NORMAL: a commit survives a crash of any process (what concurrent allocators
        # need); only a power loss may drop the last leases, and their pods go with it.
        # Measured: 3.8 ms -> under 1 ms per allocation on this VM.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        state.ensure_schema(self.conn, "podnet.ipam", SCHEMA_VERSION, DDL)

    def allocate(self, pool_cidr: str | Network, owner: str, *, reserved: Iterable[str] = (),
                 reserve_first_host: bool = True) -> Address:
        """The owner's address in `pool_cidr`: its existing lease, else a new one.

        AlreadyExists if the owner holds an address in another pool; PoolExhausted when
        nothing is left.
        """
        return self.allocate_lease(pool_cidr, owner, reserved=reserved,
                                   reserve_first_host=reserve_first_host).address

    def allocate_lease(self, pool_cidr: str | Network, owner: str, *, reserved: Iterable[str] = (),
                       reserve_first_host: bool = True) -> Lease:
        pool = parse_pool(pool_cidr)
        if not owner:
            raise UsageError("an IPAM owner must be a non-empty string")
        first, last = usable_offsets(pool, reserve_first_host)
        skip = reserved_offsets(pool, reserved)
        key = str(pool)
        base = int(pool.network_address)
        with state.transaction(self.conn):
            row = self.conn.execute(
                "SELECT pool, address FROM ipam_leases WHERE space=? AND owner=?",
                (self.space, owner)).fetchone()
            if row:
                if row["pool"] != key:
                    raise AlreadyExists(f"IPAM owner {owner} already holds {row['address']} "
                                        f"in pool {row['pool']}")
                return Lease(pool, ipaddress.ip_address(row["address"]), owner)
            cur = self.conn.execute("SELECT next_offset FROM ipam_pools WHERE space=? AND pool=?",
                                    (self.space, key)).fetchone()
            nxt = cur["next_offset"] if cur else first
            nxt = max(nxt, first)
            while nxt <= last and nxt in skip:
                nxt += 1
            if nxt <= last:
                off = nxt
                self.conn.execute(
                    "INSERT INTO ipam_pools (space, pool, next_offset) VALUES (?, ?, ?) "
                    "ON CONFLICT (space, pool) DO UPDATE SET next_offset=excluded.next_offset",
                    (self.space, key, off + 1))
                addr = ipaddress.ip_address(base + off)
                self.conn.execute(
                    "INSERT INTO ipam_leases (space, pool, offset, address, owner) VALUES (?, ?, ?, ?, ?)",
                    (self.space, key, off, str(addr), owner))
                return Lease(pool, addr, owner)
            # Never-used addresses are gone: reuse the oldest released one.
            for free in self.conn.execute(
                    "SELECT offset, address FROM ipam_leases WHERE space=? AND pool=? AND owner IS NULL "
                    "ORDER BY released_seq", (self.space, key)).fetchall():
                if free["offset"] in skip or not first <= free["offset"] <= last:
                    continue
                self.conn.execute(
                    "UPDATE ipam_leases SET owner=?, released_seq=NULL WHERE space=? AND pool=? AND offset=?",
                    (owner, self.space, key, free["offset"]))
                return Lease(pool, ipaddress.ip_address(free["address"]), owner)
        raise PoolExhausted(f"IPAM pool {key} is full ({capacity(pool, reserved, reserve_first_host)} "
                            f"addresses, all leased)", op=f"allocate an address for {owner}")

    def release(self, owner: str) -> Address | None:
        """Free the owner's address; None if it held none (idempotent, as CNI DEL must be)."""
        with state.transaction(self.conn):
            row = self.conn.execute("SELECT pool, offset, address FROM ipam_leases WHERE space=? AND owner=?",
                                    (self.space, owner)).fetchone()
            if not row:
                return None
            seq = self.conn.execute("SELECT COALESCE(MAX(released_seq), 0) + 1 FROM ipam_leases "
                                    "WHERE space=?", (self.space,)).fetchone()[0]
            self.conn.execute("UPDATE ipam_leases SET owner=NULL, released_seq=? "
                              "WHERE space=? AND pool=? AND offset=?",
                              (seq, self.space, row["pool"], row["offset"]))
        return ipaddress.ip_address(row["address"])

    def lookup(self, owner: str) -> Lease | None:
        row = self.conn.execute("SELECT pool, address FROM ipam_leases WHERE space=? AND owner=?",
                                (self.space, owner)).fetchone()
        if not row:
            return None
        return Lease(ipaddress.ip_network(row["pool"]), ipaddress.ip_address(row["address"]), owner)

    def leases(self, pool_cidr: str | Network | None = None) -> list[Lease]:
        """Current leases (of one pool, or all in the space), by address."""
        q = "SELECT pool, address, owner FROM ipam_leases WHERE space=? AND owner IS NOT NULL"
        args: tuple = (self.space,)
        if pool_cidr is not None:
            q += " AND pool=?"
            args += (str(parse_pool(pool_cidr)),)
        rows = self.conn.execute(q + " ORDER BY pool, offset", args).fetchall()
        return [Lease(ipaddress.ip_network(r["pool"]), ipaddress.ip_address(r["address"]), r["owner"])
                for r in rows]

    def forget_pool(self, pool_cidr: str | Network) -> None:
        """Drop a pool and all its leases (its node is gone)."""
        key = str(parse_pool(pool_cidr))
        with state.transaction(self.conn):
            self.conn.execute("DELETE FROM ipam_leases WHERE space=? AND pool=?", (self.space, key))
            self.conn.execute("DELETE FROM ipam_pools WHERE space=? AND pool=?", (self.space, key))

    def forget_space(self) -> int:
        """Drop every pool and lease of the space (fastpath down); returns leases dropped."""
        with state.transaction(self.conn):
            n = self.conn.execute("DELETE FROM ipam_leases WHERE space=?", (self.space,)).rowcount
            self.conn.execute("DELETE FROM ipam_pools WHERE space=?", (self.space,))
        return n
