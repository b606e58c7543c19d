"""The syscall edge of forwarding: splice(2), recv/send, shutdown, FIONREAD, on raw fds.

Kernel facts the forwarder relies on (splice(2), tcp(7), and net/ipv4/tcp.c):
- splice(sock -> pipe, SPLICE_F_NONBLOCK) returns EAGAIN both when the socket has
  nothing to read and when the pipe is full; only the caller knows the pipe's fill
  level, so only it can tell which (`forward.Direction` keeps the pipe empty before a
  read, so EAGAIN there means "socket empty").
- splice returns 0 at EOF (the peer's FIN), like read.
- EINVAL before any byte moved means this fd pair cannot splice (not a socket/pipe
  pair the kernel supports): fall back to copying, as Go's internal/poll does.
- tcp_splice_read reads sk_receive_queue only. A socket in a SOCKHASH whose peer
  sends through an sk_msg redirect receives into the psock's ingress_msg list instead:
  epoll reports it readable, recvmsg (tcp_bpf_recvmsg) returns the bytes, splice
  finds nothing and says EAGAIN. `pending` lets the forwarder see this.
- SIGPIPE is ignored by the Python runtime, so a write to a reset peer is EPIPE.

Tests replace `SocketOps` with an in-memory fake (tests/proxy/fakes.py).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
import termios
from _socket import socket as RawSocket

SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_FIONREAD = termios.FIONREAD


class SocketOps:
    """The real syscalls, on fds. Every method may raise OSError; the forwarder sorts them."""

    splice_flags = SPLICE_FLAGS

    def splice(self, fd_in: int, fd_out: int, n: int) -> int:
        return os.splice(fd_in, fd_out, n, flags=SPLICE_FLAGS)

    def recv_into(self, fd: int, buf) -> int:
        return os.readv(fd, (buf,))

    def send(self, fd: int, data) -> int:
        return os.write(fd, data)

    def shutdown_wr(self, fd: int, sock: RawSocket | None = None) -> None:
        if sock is not None:  # the owner's object: no wrapper to build per call
            sock.shutdown(socket.SHUT_WR)
            return
        s = socket.socket(fileno=fd)
        try:
            s.shutdown(socket.SHUT_WR)
        finally:
            s.detach()

    def pending(self, fd: int, peek: bool = False) -> int:
        """Bytes readable on a socket: FIONREAD, else (peek) peek_one."""
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(fd, _FIONREAD, buf, True)
        except OSError as e:
            # EBADF/ENOTSOCK would be a bug in the caller's fd bookkeeping: say so
            if e.errno in (errno.EBADF, errno.ENOTSOCK):
                raise
            return 0  # ENOTCONN and the like: nothing readable, the read path will tell why
        if buf[0] or not peek:
            return buf[0]
        return self.peek_one(fd)

    def peek_one(self, fd: int) -> int:
        """1 when a byte is readable, by a 1-byte MSG_PEEK: tcp_bpf_recvmsg serves it from
        the sk_msg ingress list that splice cannot see, and where FIONREAD counts 0 for
        redirected bytes (kernels without sk_psock.msg_tot_len, 6.1) it is the only way."""
        s = socket.socket(fileno=fd)
        try:
            return len(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return 0  # nothing queued now
        except OSError as e:
            if e.errno in (errno.EBADF, errno.ENOTSOCK):
                raise
            return 0  # a reset or error: the read path reports it
        finally:
            s.detach()


_LINGER_RST = struct.pack("ii", 1, 0)
_LINGER_OFF = struct.pack("ii", 0, 0)
# Every proxied socket carries SO_LINGER {1, 0} from the start (client sockets inherit it
# from the listener, whose flags accept(2) copies; backend sockets get it when made), so
# when a worker dies, by SIGKILL or a crash, the kernel closes each of its sockets with a
# RST (tcp(7)): a client reading to EOF never takes a cut stream for a complete one. A
# graceful close turns lingering off first (abortive_off), or close(2) would reset too
# and drop what is still queued to send.
LINGER_ABORT = _LINGER_RST


def abortive_off(sock: RawSocket) -> None:
    """Back to a normal close(2): FIN after what is queued, not RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
    except OSError:
        pass


def graceful_close(sock: RawSocket) -> None:
    """Close a socket whose direction ended both ways (nothing unread): the FIN still
    held goes with close(2)."""
    abortive_off(sock)
    sock.close()


def reset_close(sock: RawSocket) -> None:
    """Close with RST (SO_LINGER 0), the way a reset is carried to the other side."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


def drain_close(sock: RawSocket) -> None:
    """Close with FIN: read what the peer sent (close() with unread bytes would send
    RST instead), then shut for writing and close."""
    abortive_off(sock)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()
