"""IPAM: exclusions, idempotent owners, reuse order, exhaustion, concurrency across processes."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp

import pytest

from fastpath.errors import AlreadyExists, UsageError
from fastpath.podnet import ipam
from fastpath.podnet.ipam import Ipam, PoolExhausted


def test_offsets_exclude_network_gateway_broadcast():
    assert ipam.usable_offsets(ipaddress.ip_network("10.0.0.0/24")) == (2, 254)
    assert ipam.usable_offsets(ipaddress.ip_network("10.0.0.0/24"), reserve_first_host=False) == (1, 254)
    assert ipam.usable_offsets(ipaddress.ip_network("10.0.0.0/31")) == (0, 1)
    assert ipam.usable_offsets(ipaddress.ip_network("10.0.0.7/32")) == (0, 0)
    assert ipam.usable_offsets(ipaddress.ip_network("fd00::/120")) == (2, 255)
    assert ipam.capacity(ipaddress.ip_network("10.0.0.0/29"), reserved=["10.0.0.4"]) == 4


def test_first_allocations_are_lowest_usable_and_owner_is_idempotent():
    i = Ipam()
    a = i.allocate("10.1.0.0/24", "pod/a")
    assert str(a) == "10.1.0.2"
    assert i.allocate("10.1.0.0/24", "pod/a") == a
    assert str(i.allocate("10.1.0.0/24", "pod/b", reserved=["10.1.0.3"])) == "10.1.0.4"
    assert i.lookup("pod/b").address == ipaddress.ip_address("10.1.0.4")
    assert [str(x.address) for x in i.leases("10.1.0.0/24")] == ["10.1.0.2", "10.1.0.4"]
    with pytest.raises(AlreadyExists):
        i.allocate("10.2.0.0/24", "pod/a")


def test_freed_addresses_reused_only_after_never_used_oldest_first():
    i = Ipam()
    got = [str(i.allocate("10.3.0.0/29", f"o{k}")) for k in range(3)]   # .2 .3 .4
    assert got == ["10.3.0.2", "10.3.0.3", "10.3.0.4"]
    assert str(i.release("o1")) == "10.3.0.3"
    assert str(i.release("o0")) == "10.3.0.2"
    assert i.release("o0") is None                                        # idempotent
    # never-used .5 and .6 come first, then .3 (released first), then .2
    assert [str(i.allocate("10.3.0.0/29", f"n{k}")) for k in range(4)] == \
        ["10.3.0.5", "10.3.0.6", "10.3.0.3", "10.3.0.2"]
    with pytest.raises(PoolExhausted, match="10.3.0.0/29 is full"):
        i.allocate("10.3.0.0/29", "one-too-many")


def test_spaces_are_apart_and_forget():
    a, b = Ipam(space="fp-a-"), Ipam(space="fp-b-")
    assert a.allocate("10.4.0.0/24", "x") == b.allocate("10.4.0.0/24", "x")
    assert a.forget_space() == 1
    assert a.lookup("x") is None and b.lookup("x") is not None
    b.forget_pool("10.4.0.0/24")
    assert b.leases() == []


def test_bad_input():
    with pytest.raises(UsageError, match="invalid pool CIDR"):
        Ipam().allocate("10.0.0.1/24", "x")
    with pytest.raises(UsageError):
        Ipam().allocate("10.0.0.0/24", "")


def _worker(args):
    start, owners = args
    start.wait()
    i = Ipam()
    try:
        return [(o, str(i.allocate("10.9.0.0/24", o))) for o in owners]
    finally:
        i.conn.close()


def test_concurrent_processes_never_share_an_address():
    ctx = mp.get_context("fork")
    # schema first, so workers only race on allocations; and no SQLite connection may
    # cross a fork (a child closing an inherited one can checkpoint under the others)
    Ipam().conn.close()
    with ctx.Manager() as m:
        start = m.Event()
        jobs = [(start, [f"p{w}-{k}" for k in range(12)]) for w in range(6)]
        with ctx.Pool(6) as pool:
            res = pool.map_async(_worker, jobs)
            start.set()
            out = [x for chunk in res.get(60) for x in chunk]
    addrs = [a for _, a in out]
    assert len(out) == 72 and len(set(addrs)) == 72
    held = {str(x.address) for x in Ipam().leases()}
    assert held == set(addrs), (sorted(held - set(addrs)), sorted(set(addrs) - held))
