"""Known kernel behaviour of sockets in a SOCKHASH (6.18 here; 6.1 and 6.12 in the guest
conformance run), each pinned down so a kernel change shows up as a failing test rather
than as a hang in production."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios
import time

import pytest

from tests.sockredir.conftest import in_cgroup, pair, recv_exact

pytestmark = pytest.mark.root


def fionread(sock) -> int:
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


def splice_once(sock) -> int | str:
    """splice(sock -> pipe) with the socket non-blocking: bytes moved, or an errno name."""
    r, w = os.pipe()
    sock.setblocking(False)
    try:
        return os.splice(sock.fileno(), w, 1 << 16, flags=os.SPLICE_F_NONBLOCK)
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        sock.setblocking(True)
        sock.settimeout(10)
        os.close(r), os.close(w)


def test_splice_does_not_see_redirected_data(accel):
    """Redirected bytes sit in the psock's ingress queue; tcp_splice_read only reads the TCP
    receive queue. A blocking splice would wait forever (why the proxy asks is_accelerated
    and copies instead); a non-blocking one says EAGAIN while recv has the bytes."""
    from fastpath.sockredir.query import is_accelerated
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    assert is_accelerated(s)
    c.sendall(b"x" * 1000)
    time.sleep(0.05)
    assert splice_once(s) == "EAGAIN"
    assert recv_exact(s, 1000) == b"x" * 1000
    # control: the same on a plain connection moves the bytes
    pc, ps = pair()
    assert not is_accelerated(ps)
    pc.sendall(b"y" * 1000)
    time.sleep(0.05)
    assert splice_once(ps) == 1000
    for x in (c, s, pc, ps):
        x.close()


def test_fionread_counts_redirected_bytes(accel):
    """Kernels without sk_psock.msg_tot_len (6.1) answer 0 for bytes waiting in the psock
    queue (callers that size a read with FIONREAD then stall), and MSG_PEEK still sees them:
    the proxy's fallback. Kernels with it (6.12, 6.18) count them, also after a partial read."""
    from fastpath.proxy.splice import SocketOps
    from fastpath.sockredir import libbpf as B
    with B.KernelBtf() as btf:
        counts = "msg_tot_len" in (btf.members("sk_psock") or [])
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    c.sendall(b"a" * 1000)
    time.sleep(0.05)
    if not counts:
        assert fionread(s) == 0
        assert SocketOps().pending(s.fileno(), peek=True) == 1
        assert recv_exact(s, 1000) == b"a" * 1000
        c.close(), s.close()
        return
    assert fionread(s) == 1000
    assert s.recv(300) == b"a" * 300
    assert fionread(s) == 700
    c.sendall(b"b" * 50)
    time.sleep(0.05)
    assert fionread(s) == 750
    assert recv_exact(s, 750) == b"a" * 700 + b"b" * 50
    assert fionread(s) == 0
    c.close(), s.close()


def test_close_one_end_while_the_other_sends(accel):
    """The receiver closes with redirected bytes unread while the sender keeps sending: the
    sender must get EPIPE/ECONNRESET promptly, never block."""
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    c.sendall(os.urandom(200_000))  # unread in s's psock queue
    s.close()
    c.settimeout(5)
    t0 = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(2000):
            c.sendall(b"z" * 65536)
    assert time.monotonic() - t0 < 5
    c.close()


def test_reset_while_the_other_end_reads(accel):
    """An abortive close (SO_LINGER 0) of a sender: the reader gets a prefix then
    ECONNRESET or EOF, without hanging."""
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    data = os.urandom(500_000)
    c.sendall(data)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    got = bytearray()
    s.settimeout(5)
    try:
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    # every byte was in s's psock queue before the RST: the reader gets them all, in order
    assert len(got) == len(data) and bytes(got) == data
    s.close()


def test_msg_peek_sees_redirected_bytes_and_takes_none(accel):
    """The proxy's fallback where FIONREAD cannot count redirected bytes (6.1): a 1-byte
    MSG_PEEK, served by tcp_bpf_recvmsg from the psock queue, driven here for real."""
    from fastpath.proxy.splice import SocketOps
    from fastpath.sockredir.query import is_accelerated
    ops = SocketOps()
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    assert is_accelerated(s)
    assert ops.peek_one(s.fileno()) == 0          # nothing queued: EAGAIN, not an error
    c.sendall(b"p" * 3000)
    time.sleep(0.05)
    assert ops.peek_one(s.fileno()) == 1
    assert ops.peek_one(s.fileno()) == 1          # a peek consumes nothing
    assert recv_exact(s, 3000) == b"p" * 3000
    assert ops.peek_one(s.fileno()) == 0
    c.close()
    time.sleep(0.05)
    assert ops.peek_one(s.fileno()) == 0          # EOF: nothing to read, the read path tells
    s.close()
    with pytest.raises(OSError):
        ops.peek_one(s.fileno() if s.fileno() >= 0 else 10_000)  # a closed fd is a bug: raised
