"""The C lane (proxy/_lane.c) on real loopback TCP pairs, without a worker around it:
bytes once and in order through a blocked peer, the held FIN, resets, the bulk hand-back,
and events of fds it does not own."""

from __future__ import annotations

import os
import select
import socket
import struct
import time

import pytest

from fastpath.proxy import errnos, forward
from fastpath.proxy._lane import BULK, Lane

ET = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
GONE = sorted(errnos.of(errnos.DATA, errnos.Decision.PEER_GONE))


def tcp_pair():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    a = socket.create_connection(ls.getsockname())
    b, _ = ls.accept()
    ls.close()
    return a, b


@pytest.fixture
def rig():
    """client <-> [c lane b] <-> backend: the lane forwards between c and b."""
    ep = select.epoll()
    client, c = tcp_pair()
    b, backend = tcp_pair()
    for s in (c, b):
        s.setblocking(False)
        ep.register(s.fileno(), ET)
    socks = [client, c, b, backend]
    yield ep, client, c, b, backend
    for s in socks:
        s.close()
    ep.close()


def run(lane, until, seconds=5.0):
    """Poll until until(reports) is true; returns every report seen."""
    seen: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, done = lane.poll(0.01)
        seen += done
        if until(seen):
            return seen
    raise AssertionError(f"lane did not get there; reports {seen}")


def test_bytes_through_a_blocked_peer_then_held_fins_and_the_end(rig):
    ep, client, c, b, backend = rig
    lane = Lane(ep.fileno(), GONE, 65536, 0)
    lane.add(c.fileno(), b.fileno(), False, False)
    assert lane.pump(c.fileno(), 0) == [] and lane.pairs == 1
    data = os.urandom(4 << 20)  # more than both socket buffers: the lane must hold some
    client.setblocking(False)
    sent = 0
    got = bytearray()
    backend.setblocking(False)
    deadline = time.monotonic() + 20
    while len(got) < len(data) and time.monotonic() < deadline:
        if sent < len(data):
            try:
                sent += client.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
        lane.poll(0)
        try:
            got += backend.recv(1 << 20)
        except BlockingIOError:
            pass
    assert bytes(got) == data  # once, in order
    client.shutdown(socket.SHUT_WR)
    run(lane, lambda _: _read_eof(backend))  # the FIN went out, one round later
    backend.sendall(b"answer")
    backend.shutdown(socket.SHUT_WR)
    (report,) = run(lane, lambda seen: seen)
    cfd, r1, r2, moved1, moved2, err, pend1, pend2, flags = report
    assert cfd == c.fileno() and (r1, r2) == (forward.DONE, forward.DONE)
    assert (moved1, moved2, err, pend1, pend2) == (len(data), 6, 0, b"", b"")
    assert flags & 0b10 and flags & 0b10000 and flags & 0b100  # both ended, c2b FIN sent
    assert lane.pairs == 0
    client.setblocking(True)
    assert client.recv(100) == b"answer"


def _read_eof(s) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False


def test_a_reset_is_reported_with_its_side(rig):
    ep, client, c, b, backend = rig
    lane = Lane(ep.fileno(), GONE, 65536, 0)
    lane.add(c.fileno(), b.fileno(), False, False)
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    backend.close()
    (report,) = run(lane, lambda seen: seen)
    assert report[2] == forward.SRC_RESET  # b2c read the backend's RST
    assert lane.pairs == 0


def test_a_bulk_read_hands_the_pair_back_with_what_is_pending(rig):
    ep, client, c, b, backend = rig
    lane = Lane(ep.fileno(), GONE, 65536, 4096)
    lane.add(c.fileno(), b.fileno(), True, False)
    client.sendall(b"x" * 5000)
    (report,) = run(lane, lambda seen: seen)
    _, r1, r2, moved1, _, _, pend1, _, flags = report
    assert r1 == BULK and flags & (1 << 6)
    assert moved1 + len(pend1) == 5000  # forwarded, or handed back to be forwarded
    backend.settimeout(2)
    assert len(backend.recv(10000)) == moved1


def test_events_of_other_fds_come_back_and_remove_last(rig):
    ep, client, c, b, backend = rig
    lane = Lane(ep.fileno(), GONE, 65536, 0)
    lane.add(c.fileno(), b.fileno(), False, False)
    r, w = os.pipe()
    try:
        ep.register(r, select.EPOLLIN)
        os.write(w, b"!")
        events, done = lane.poll(1.0)
        assert (r, select.EPOLLIN) in events and done == []
        assert lane.last(c.fileno()) <= time.monotonic() and lane.last(b.fileno()) is None
        with pytest.raises(ValueError):
            lane.add(c.fileno(), b.fileno(), False, False)  # already there
        assert lane.remove(c.fileno()) and not lane.remove(c.fileno()) and lane.pairs == 0
    finally:
        ep.unregister(r)
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("together", [False, True])
def test_a_fin_after_a_short_read_is_never_missed(rig, together):
    # a short read ends a turn only when the wakeup said no FIN: a FIN queued with the
    # data must be read in the same turn, one arriving later raises its own edge
    ep, client, c, b, backend = rig
    lane = Lane(ep.fileno(), GONE, 65536, 0)
    lane.add(c.fileno(), b.fileno(), False, False)
    backend.setblocking(False)
    client.sendall(b"short")
    if together:
        client.shutdown(socket.SHUT_WR)
    got = bytearray()

    def until(_):
        nonlocal got
        try:
            chunk = backend.recv(100)
        except BlockingIOError:
            return False
        got += chunk
        return chunk == b""
    if not together:
        run(lane, lambda _: _recv_some(backend, got))
        client.shutdown(socket.SHUT_WR)
    run(lane, until)
    assert bytes(got) == b"short"


def _recv_some(s, into) -> bool:
    try:
        into += s.recv(100)
    except BlockingIOError:
        return False
    return bool(into)
