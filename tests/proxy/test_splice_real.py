"""The forwarder on real loopback sockets and real pooled pipes (test_forward.py drives the
same state machine against fakes, to reach every schedule; this one proves the kernel does
what the fakes assume: splice moves the bytes, a pooled pipe comes back empty)."""

from __future__ import annotations

import hashlib
import os
import random
import select
import socket
import threading

from fastpath.proxy import forward
from fastpath.proxy.forward import Direction
from fastpath.proxy.pipepool import PipeCache, PipePool
from fastpath.proxy.splice import SocketOps


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as ls:
        c = socket.create_connection(ls.getsockname(), timeout=30)
        s, _ = ls.accept()
    return c, s


def test_splice_through_a_pooled_pipe_moves_every_byte_in_order():
    data = random.Random(3).randbytes(4 << 20)
    client, front = _pair()      # client -> front: what the proxy accepts
    back, server = _pair()       # back -> server: the proxy's backend connection
    for s in (front, back):
        s.setblocking(False)
    pool = PipePool(size=1 << 18, cap=4, idle=0)
    fds_before = len(os.listdir("/proc/self/fd"))
    cache = PipeCache(pool)
    d = Direction(front.fileno(), back.fileno(), SocketOps(), cache, "splice", 4096)
    got = hashlib.sha256()
    received = [0]

    def drain():
        while True:
            b = server.recv(1 << 20)
            if not b:
                return
            got.update(b)
            received[0] += len(b)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    sender = threading.Thread(target=lambda: (client.sendall(data),
                                              client.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    with select.epoll() as ep:
        ep.register(front, select.EPOLLIN)
        ep.register(back, select.EPOLLOUT)
        for _ in range(100_000):
            r = d.pump()
            if r == forward.DONE:
                break
            if r != forward.YIELD:
                assert ep.poll(30), f"stalled in {r} after {d.bytes} bytes"
        else:
            raise AssertionError("no end after 100000 rounds")
    sender.join(30)
    reader.join(30)
    assert received[0] == len(data) and got.digest() == hashlib.sha256(data).digest()
    assert d.spliced == len(data) and d.copied == 0 and d.fallback == ""
    assert d.pipe is None and pool.counters.in_use == 0 and pool.counters.closed_dirty == 0
    cache.close()
    pool.close()
    for s in (client, front, back, server):
        s.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before - 4
