"""Channel between real processes: in-place messages, wakeups, backpressure, clean close,
peer death (never a hang), stray fds, and no fd or mapping leak over 10,000 messages."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from fastpath._atomic import AtomicView
from fastpath.errors import UsageError
from fastpath.shm import channel, ring
from fastpath.shm import header as hdr
from fastpath.shm.errors import ChannelClosed, ChannelTimeout, PeerDied
from fastpath.shm.handover import Connection, Listener, send_message

from .conftest import fd_count, map_count


def _pin(cpu):
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _produce(path, n, size=64, pause_every=0, spin=0.0, slots=8, cpu=None):
    if cpu is not None:
        _pin(cpu)
    c = Connection.connect(path)
    with channel.offer(c, slots=slots, capacity=max(size, 64), spin=spin) as p:
        for i in range(n):
            view = p.loan(timeout=10)
            view[:size] = bytes([i & 0xFF]) * size
            view[:8] = i.to_bytes(8, "little")
            p.commit(size)
            if pause_every and i % pause_every == 0:
                time.sleep(0.01)  # let the consumer fall asleep: exercises the eventfd wakeup
    os._exit(0)


def _accept(lis, **kw):
    return channel.accept(lis.accept(timeout=10), **kw)


def test_messages_arrive_in_place_in_order_then_clean_close(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_produce, sock_path, 200, 1000, 20)
        with _accept(lis) as cons:
            assert cons.role == "consumer" and cons.capacity == 1000
            for i in range(200):
                v = cons.read(timeout=10)
                assert v.readonly and len(v) == 1000
                assert int.from_bytes(v[:8], "little") == i and v[999] == i & 0xFF
                cons.release()
                with pytest.raises(ValueError):
                    v[0]  # the view dies with release(): no use-after-release
            with pytest.raises(ChannelClosed, match="producer closed"):
                cons.read(timeout=10)
        p.join(10)
        assert p.exitcode == 0


def _consume_and_echo(path, n):
    c = Connection.connect(path)
    cons = channel.accept(c)
    total = sum(len(m) for m in cons)  # until the producer closes
    os._exit(0 if total == n else 3)


def test_offering_side_can_be_the_consumer_too(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_consume_and_echo, sock_path, 5 * 100)
        with channel.offer(lis.accept(timeout=10), slots=2, capacity=128) as prod:
            assert prod.role == "producer"
            for _ in range(5):
                prod.send(b"x" * 100, timeout=10)
        p.join(10)
        assert p.exitcode == 0


def test_bytes_never_seen_before_commit_under_busy_polling(sock_path, peers):
    """Producer and consumer spin on two CPUs; every byte of every 4 KiB slot is checked."""
    n, size = 20_000, 4096
    pats = [bytes([k]) * (size - 8) for k in range(256)]
    with Listener(sock_path) as lis:
        p = peers.start(_produce, sock_path, n, size, 0, 0.002, 4, 0)
        old_affinity = os.sched_getaffinity(0)
        _pin(1)
        try:
            with _accept(lis, spin=0.002) as cons:
                for i in range(n):
                    v = cons.read(timeout=10)
                    assert int.from_bytes(v[:8], "little") == i
                    assert v[8:] == pats[i & 0xFF]
                    cons.release()
        finally:
            os.sched_setaffinity(0, old_affinity)
        p.join(10)
        assert p.exitcode == 0


def test_10000_messages_leak_no_fd_or_mapping(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_produce, sock_path, 10_000, 256)
        fds, maps = fd_count(), map_count()
        with _accept(lis) as cons:
            during = fd_count(), map_count()
            for i in range(10_000):
                v = cons.read(timeout=10)
                assert int.from_bytes(v[:8], "little") == i
                cons.release()
                if i % 2500 == 0:
                    assert (fd_count(), map_count()) == during
        p.join(10)
        assert p.exitcode == 0
        assert (fd_count(), map_count()) == (fds, maps)


def test_read_times_out_with_nothing_to_read(sock_path, peers, report):
    def idle(path, rep):
        c = Connection.connect(path)
        with channel.offer(c, slots=2, capacity=64):
            rep.get(30)
        os._exit(0)
    with Listener(sock_path) as lis:
        p = peers.start(idle, sock_path, report)
        with _accept(lis, spin=0.01) as cons:
            t = time.monotonic()
            with pytest.raises(ChannelTimeout, match="no message"):
                cons.read(timeout=0.2)
            assert 0.19 < time.monotonic() - t < 10
            report.put("done")
        p.join(10)


def _slow_consumer(path, rep):
    cons = channel.accept(Connection.connect(path))
    rep.get(30)  # wait for "go"
    n = sum(1 for _ in cons)
    rep.put(n)
    os._exit(0)


def test_full_ring_pushes_back_until_the_consumer_releases(sock_path, peers, report):
    with Listener(sock_path) as lis:
        p = peers.start(_slow_consumer, sock_path, report)
        with channel.offer(lis.accept(timeout=10), slots=4, capacity=64) as prod:
            for _ in range(4):
                prod.send(b"m", timeout=0)
            with pytest.raises(ChannelTimeout, match="ring full"):
                prod.loan(timeout=0.2)
            report.put("go")
            for _ in range(10):
                prod.send(b"m", timeout=10)  # the consumer drains, the producer goes on
        assert report.get() == 14
        p.join(10)


def _die_mid_message(path):
    c = Connection.connect(path)
    p = channel.offer(c, slots=8, capacity=1 << 16)
    for i in range(3):
        p.send(i.to_bytes(8, "little"))
    view = p.loan()
    view[: 1 << 15] = b"\xff" * (1 << 15)  # half a message, never committed
    os.kill(os.getpid(), signal.SIGKILL)


def test_producer_dying_mid_message_is_reported_not_a_hang(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_die_mid_message, sock_path)
        with _accept(lis) as cons:
            got = [int.from_bytes(cons.recv(timeout=10), "little") for _ in range(3)]
            assert got == [0, 1, 2]  # what was committed before the death still arrives
            t = time.monotonic()
            with pytest.raises(PeerDied, match=f"producer \\(pid {p.pid}\\) died"):
                cons.read(timeout=30)
            assert time.monotonic() - t < 5
            assert not cons.peer_alive()
        p.join(10)
        assert p.exitcode == -signal.SIGKILL


def _consumer_dies(path):
    cons = channel.accept(Connection.connect(path))
    cons.read(timeout=10)
    os.kill(os.getpid(), signal.SIGKILL)


def test_consumer_dying_unblocks_a_producer_on_a_full_ring(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_consumer_dies, sock_path)
        with channel.offer(lis.accept(timeout=10), slots=2, capacity=64) as prod:
            t = time.monotonic()
            with pytest.raises(PeerDied, match="consumer"):
                for _ in range(10):
                    prod.send(b"m", timeout=30)
            assert time.monotonic() - t < 5
        p.join(10)


def _stray_fds(path, rep):
    c = Connection.connect(path)
    prod = channel.offer(c, slots=2, capacity=64)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(250)]
    send_message(c.sock, hdr.Header(hdr.KIND_REPLY, flags=hdr.FLAG_OK), fds)
    rep.get(30)
    prod.send(b"after")
    prod.close()
    os._exit(0)


def test_fds_pushed_down_the_channel_socket_are_closed(sock_path, peers, report):
    with Listener(sock_path) as lis:
        p = peers.start(_stray_fds, sock_path, report)
        with _accept(lis) as cons:
            before = fd_count()
            with pytest.raises(ChannelTimeout):
                cons.read(timeout=0.5)  # the socket turns readable: stray fds, not EOF
            assert fd_count() == before and cons.peer_alive()
            report.put("go")
            assert cons.recv(timeout=10) == b"after"
        p.join(10)
        assert p.exitcode == 0


def _offer_bad_channel(path, what, rep):
    from fastpath.shm import ring
    from fastpath.shm.errors import HandoverRefused
    from fastpath.shm.memfd import Region
    c = Connection.connect(path)
    lay = ring.RingLayout(4, 64)
    r = Region.create(lay.size)
    if what != "garbage control page":
        r.buf[:32] = lay.identity()
    r.seal()
    efds = [os.eventfd(0), os.eventfd(0)]
    if what == "not an eventfd":
        efds[1] = os.open("/dev/null", os.O_RDONLY)
    slots = 5 if what == "header disagrees" else 4
    send_message(c.sock, hdr.Header(hdr.KIND_CHANNEL, size=lay.size, arg0=slots, arg1=64,
                                    flags=hdr.FLAG_PRODUCER), [r.fd, *efds])
    try:
        c.wait_reply(10, "offer")
        rep.put("accepted")
    except HandoverRefused as e:
        rep.put(str(e))
    os._exit(0)


@pytest.mark.parametrize("what, why", [
    ("garbage control page", "no ring magic"),
    ("not an eventfd", "expected an eventfd, got /dev/null"),
    ("header disagrees", "disagree on the ring shape"),
])
def test_a_bad_channel_offer_is_refused_and_nothing_kept(sock_path, peers, report, what, why):
    from fastpath.shm.errors import HandoverRefused
    with Listener(sock_path) as lis:
        peers.start(_offer_bad_channel, sock_path, what, report)
        with lis.accept(timeout=10) as conn:
            fds, maps = fd_count(), map_count()
            with pytest.raises(HandoverRefused, match=why):
                channel.accept(conn)
            assert (fd_count(), map_count()) == (fds, maps)
        assert why in report.get()


@pytest.fixture
def pair(sock_path):
    """A producer and a consumer of one channel, both in this process."""
    got = {}
    with Listener(sock_path) as lis:
        t = threading.Thread(target=lambda: got.setdefault(
            "cons", channel.accept(Connection.connect(sock_path), spin=0.05)))
        t.start()
        prod = channel.offer(lis.accept(timeout=10), slots=4, capacity=256, spin=0.05)
        t.join(10)
    yield prod, got["cons"]
    prod.close()
    got["cons"].close()


def test_a_peer_writing_garbage_counters_or_lengths_gets_a_ring_error(pair):
    prod, cons = pair
    a = AtomicView(prod.region.buf)
    try:
        prod.send(b"one", timeout=1)
        a.store(prod.layout.length_offset(0), 10_000)       # a length past the slot
        with pytest.raises(ring.RingError, match="exceeds slot capacity"):
            cons.read(timeout=1)
        a.store(prod.layout.length_offset(0), 3)
        assert bytes(cons.read(timeout=1)) == b"one"
        cons.release()
        a.store(ring.OFF_HEAD, 99)                           # 98 messages in 4 slots
        with pytest.raises(ring.RingError, match="impossible"):
            cons.read(timeout=1)
        a.store(ring.OFF_HEAD, 1)
        a.store(ring.OFF_TAIL, 7)                            # more released than committed
        for _ in range(3):
            prod.send(b"x", timeout=1)                       # ring looks free from its cache
        with pytest.raises(ring.RingError, match="impossible"):
            prod.loan(timeout=1)
    finally:
        a.release()


def test_a_timeout_shorter_than_the_spin_is_kept(pair):
    prod, cons = pair
    t0 = time.monotonic()
    with pytest.raises(ChannelTimeout):
        cons.read(timeout=0.002)                             # spin is 50 ms
    assert time.monotonic() - t0 < 0.04
    for _ in range(4):
        prod.send(b"y", timeout=0)
    t0 = time.monotonic()
    with pytest.raises(ChannelTimeout):
        prod.loan(timeout=0.002)
    assert time.monotonic() - t0 < 0.04
    assert cons.recv(timeout=0) == b"y"
    assert len(prod.loan(timeout=0)) == 256                  # a release makes room at once


def test_misuse_is_a_usage_error_naming_the_call(pair):
    prod, cons = pair
    with pytest.raises(UsageError, match="commit: no slot on loan"):
        prod.commit(1)
    v = prod.loan(0)                                         # positional timeout too
    with pytest.raises(UsageError, match="already on loan"):
        prod.loan(timeout=0)
    with pytest.raises(UsageError, match="outside slot capacity"):
        prod.commit(257)
    v[:2] = b"ok"
    prod.commit(2)
    with pytest.raises(ValueError):
        v[0]                                                 # the loan ended with commit
    with pytest.raises(UsageError, match="release: no message to release"):
        cons.release()
    assert bytes(cons.read(timeout=1)) == b"ok"
    with pytest.raises(UsageError, match="not released yet"):
        cons.read(timeout=0)
    with pytest.raises(TypeError):
        cons.read(timeout=0, spin=1)
    cons.release()
