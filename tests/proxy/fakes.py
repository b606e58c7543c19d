"""In-memory peers for the forwarding state machine and the pipe pool: fake sockets,
pipes and fds behind the same methods as splice.SocketOps and pipepool.PipeOps."""

from __future__ import annotations

import errno
import itertools


class FakeSock:
    """One socket end as the proxy sees it: `rx` bytes it can read, `tx` what it wrote
    (bounded by `room`, the peer's free receive window)."""

    def __init__(self, room: int = 1 << 30) -> None:
        self.rx = bytearray()
        self.eof = False          # peer sent FIN (after rx is read)
        self.reset = False        # peer sent RST: reads fail ECONNRESET
        self.peer_gone = False    # writes fail EPIPE
        self.tx = bytearray()
        self.room = room
        self.shut_wr = False
        self.redirected = False   # rx is in the sk_msg ingress list: splice cannot see it
        self.einval = False       # splice refuses this fd


class FakePipe:
    def __init__(self, size: int = 65536) -> None:
        self.data = bytearray()
        self.size = size


class FakeOps:
    """Both PipeOps and SocketOps over a table of fake fds; counts syscalls."""

    def __init__(self) -> None:
        self.fds: dict[int, object] = {}
        self._next = itertools.count(100)
        self.calls: dict[str, int] = {}
        self.pipe_fail: int | None = None    # errno pipe() raises
        self.setsize_fail: int | None = None
        self.closed: list[int] = []

    def _n(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def sock(self, **kw) -> int:
        fd = next(self._next)
        self.fds[fd] = FakeSock(**kw)
        return fd

    # PipeOps
    def pipe(self) -> tuple[int, int]:
        self._n("pipe")
        if self.pipe_fail:
            raise OSError(self.pipe_fail, "pipe")
        p = FakePipe()
        r, w = next(self._next), next(self._next)
        self.fds[r] = self.fds[w] = p
        return r, w

    def set_size(self, w: int, size: int) -> int:
        self._n("set_size")
        if self.setsize_fail:
            raise OSError(self.setsize_fail, "F_SETPIPE_SZ")
        self.fds[w].size = size
        return size

    def close(self, fd: int) -> None:
        self._n("close")
        if fd not in self.fds:
            raise OSError(errno.EBADF, "close")
        del self.fds[fd]
        self.closed.append(fd)

    # SocketOps
    def splice(self, fd_in: int, fd_out: int, n: int) -> int:
        self._n("splice")
        src, dst = self.fds[fd_in], self.fds[fd_out]
        if isinstance(src, FakeSock):
            if src.einval:
                raise OSError(errno.EINVAL, "splice")
            if src.reset:
                raise OSError(errno.ECONNRESET, "splice")
            if src.redirected and src.rx:
                raise BlockingIOError(errno.EAGAIN, "splice")
            space = dst.size - len(dst.data)
            if not src.rx:
                if src.eof:
                    return 0
                raise BlockingIOError(errno.EAGAIN, "splice")
            if space <= 0:
                raise BlockingIOError(errno.EAGAIN, "splice")
            k = min(n, space, len(src.rx))
            dst.data += src.rx[:k]
            del src.rx[:k]
            return k
        # pipe -> socket
        if dst.peer_gone:
            raise OSError(errno.EPIPE, "splice")
        k = min(n, len(src.data), dst.room - len(dst.tx))
        if k <= 0:
            raise BlockingIOError(errno.EAGAIN, "splice")
        dst.tx += src.data[:k]
        del src.data[:k]
        return k

    def recv_into(self, fd: int, buf) -> int:
        self._n("recv")
        s = self.fds[fd]
        if s.reset:
            raise OSError(errno.ECONNRESET, "recv")
        if not s.rx:
            if s.eof:
                return 0
            raise BlockingIOError(errno.EAGAIN, "recv")
        k = min(len(buf), len(s.rx))
        buf[:k] = s.rx[:k]
        del s.rx[:k]
        return k

    def send(self, fd: int, data) -> int:
        self._n("send")
        s = self.fds[fd]
        if s.peer_gone:
            raise OSError(errno.EPIPE, "send")
        k = min(len(data), s.room - len(s.tx))
        if k <= 0:
            raise BlockingIOError(errno.EAGAIN, "send")
        s.tx += bytes(data[:k])
        return k

    def shutdown_wr(self, fd: int, sock=None) -> None:
        self._n("shutdown")
        self.fds[fd].shut_wr = True

    def pending(self, fd: int, peek: bool = False) -> int:
        self._n("pending")
        return len(self.fds[fd].rx)
