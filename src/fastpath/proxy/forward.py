"""One forwarding direction of a proxied connection (client -> backend, or back), as a
state machine over the syscalls of `splice.SocketOps`.

Rule for this module: no epoll, no sockets made or closed here; `Direction.pump` moves
bytes until it must wait and says what for. The event loop owns fds and readiness.

Invariants:
- Before reading from `src`, everything read earlier has been written to `dst` (pipe
  empty, copy buffer empty). So an EAGAIN from splice(src -> pipe) means the socket is
  empty, never that the pipe is full, and bytes leave in the order they came, once.
- `shutdown(dst, SHUT_WR)` happens only after `src` said EOF *and* the pipe and buffer
  are empty: half-close travels per direction and never overtakes data. With `hold_fin`
  the direction ends (DONE) without it, and the owner calls `send_fin` a little later:
  when the other direction ends meanwhile, one close(2) per socket sends both FINs and
  no shutdown(2) is needed (HAProxy saves the same two syscalls per connection).
- The pipe is held only while bytes flow: it goes back to the pool, empty, when the
  source runs dry (WANT_READ) or ends, so an idle connection holds no pipe (HAProxy's
  rule too) and the pool serves the connections that move data.
- Switching splice -> copy (EINVAL before any byte moved; or data readable that splice
  cannot see, an sk_msg-redirected socket) happens with an empty pipe, so no byte is
  stranded in it. Switching copy -> splice (auto mode, a read of at least `splice_min`
  bytes: a bulk transfer) happens with the buffer flushed first.
"""

from __future__ import annotations

import errno

from fastpath.proxy import errnos
from fastpath.proxy.pipepool import Pipe

# pump() results
WANT_READ = 1     # waiting for src to become readable
WANT_WRITE = 2    # waiting for dst to become writable (data pending)
DONE = 3          # EOF read, nothing pending; dst shut for writing unless the FIN is held
YIELD = 4         # budget spent with work left: call again soon (fairness)
SRC_RESET = 5     # reading src failed (peer reset): carry as RST to the other side
DST_RESET = 6     # writing dst failed (peer reset/gone): carry as RST back

RESULT_NAMES = {WANT_READ: "want-read", WANT_WRITE: "want-write", DONE: "done",
                YIELD: "yield", SRC_RESET: "src-reset", DST_RESET: "dst-reset"}

# errno decisions, with their reasons, come from one table (proxy/errnos.py)
_RESET = errnos.of(errnos.DATA, errnos.Decision.PEER_GONE)
_CANT_SPLICE = errnos.of(errnos.DATA, errnos.Decision.NO_SPLICE)

STRIKES = 4          # readable-but-unspliceable in a row before a spliced socket copies
BUDGET = 16          # reads per pump call before yielding to other connections
COPY_BUFSIZE = 65536


class Direction:
    """Forward `src` -> `dst`. `mode` is splice | copy | auto; `pipes` is a PipeCache
    (get/put/kill); `ops` the syscall edge; `shared_buf` the copy path's reusable
    bytearray, shared by every direction of a loop: it is empty whenever pump returns,
    except when dst blocks with bytes left, and only then are those bytes moved to a
    buffer of this direction's own (so 10k idle connections hold no buffers)."""

    __slots__ = ("src", "dst", "ops", "pipes", "mode", "splice_min", "splicing", "pipe",
                 "buf", "start", "end", "eof", "shut", "bytes", "spliced", "copied",
                 "fallback", "ever_spliced_in", "name", "shared_buf", "strikes", "detect",
                 "dst_sock", "hold_fin", "fin_sent")

    def __init__(self, src: int, dst: int, ops, pipes, mode: str = "auto",
                 splice_min: int = 4096, name: str = "",
                 shared_buf: bytearray | None = None, detect: bool = True,
                 dst_sock=None, hold_fin: bool = False) -> None:
        self.src, self.dst, self.ops, self.pipes = src, dst, ops, pipes
        self.mode = mode
        self.splice_min = splice_min
        self.splicing = mode == "splice"
        self.pipe: Pipe | None = None
        self.shared_buf = shared_buf if shared_buf is not None else bytearray(COPY_BUFSIZE)
        self.buf: bytearray = self.shared_buf
        self.start = self.end = 0
        self.eof = False
        self.shut = False       # ended: EOF read and everything forwarded
        self.fin_sent = False   # shutdown(dst, SHUT_WR) done
        self.hold_fin = hold_fin
        self.bytes = 0          # delivered to dst
        self.spliced = 0        # of which through the pipe
        self.copied = 0         # of which through the buffer
        self.fallback = ""      # why this direction left splicing, if it did
        self.ever_spliced_in = False
        self.strikes = 0
        self.detect = detect    # look for redirected bytes splice cannot see (accel)
        self.dst_sock = dst_sock  # the socket object of dst, if the caller has one
        self.name = name

    @property
    def pending(self) -> int:
        return (self.pipe.fill if self.pipe else 0) + (self.end - self.start)

    @property
    def done(self) -> bool:
        return self.shut

    def _to_copy(self, why: str) -> None:
        self.splicing = False
        self.mode = "copy"  # never back: the reason holds for the socket's lifetime
        self.fallback = why
        if self.pipe is not None:
            self.pipes.put(self.pipe)  # empty: every caller drained it first
            self.pipe = None

    def pump(self) -> int:
        ops = self.ops
        for _ in range(BUDGET):
            # 1. flush what was read before: the pipe, then the copy buffer
            p = self.pipe
            if p is not None and p.fill:
                try:
                    n = ops.splice(p.r, self.dst, p.fill)
                except BlockingIOError:
                    return WANT_WRITE
                except OSError as e:
                    if e.errno in _RESET:
                        return DST_RESET
                    raise
                p.fill -= n
                self.bytes += n
                self.spliced += n
                continue
            if self.end > self.start:
                try:
                    n = ops.send(self.dst, memoryview(self.buf)[self.start:self.end])
                except BlockingIOError:
                    if self.buf is self.shared_buf:  # keep the rest; free the shared one
                        self.buf = self.buf[self.start:self.end]
                        self.start, self.end = 0, len(self.buf)
                    return WANT_WRITE
                except OSError as e:
                    if e.errno in _RESET:
                        return DST_RESET
                    raise
                self.start += n
                self.bytes += n
                self.copied += n
                if self.start == self.end:
                    self.start = self.end = 0
                    self.buf = self.shared_buf
                continue
            # nothing pending from here on
            if self.eof:
                if p is not None:
                    self.pipe = None
                    self.pipes.put(p)
                self.shut = True
                if not self.hold_fin:
                    self.send_fin()
                return DONE
            # 2. read
            if self.splicing:
                if p is None:
                    p = self.pipe = self.pipes.get()
                if p is None:
                    r = self._copy_in()  # no pipe (cap or fds): this read copies
                else:
                    r = self._splice_in(p)
            else:
                r = self._copy_in()
            if r:
                return r
        if self.end > self.start and self.buf is self.shared_buf:
            self.buf = self.buf[self.start:self.end]  # others will use the shared one
            self.start, self.end = 0, len(self.buf)
        return YIELD

    def send_fin(self) -> None:
        """Shut dst for writing (once), after an ended pump; a peer already gone is no
        error here: the other direction reports it."""
        if self.fin_sent or not self.shut:
            return
        self.fin_sent = True
        try:
            self.ops.shutdown_wr(self.dst, self.dst_sock)
        except OSError as e:
            if e.errno not in _RESET:
                raise

    def _splice_in(self, p: Pipe) -> int:
        try:
            n = self.ops.splice(self.src, p.w, p.size)
        except BlockingIOError:
            # The pipe is empty (invariant), so the socket is. Unless the bytes sit
            # where splice cannot see them: an sk_msg redirect queues to the psock.
            # Bytes that arrived just after the EAGAIN look the same, so it must
            # happen twice in a row (STRIKES times for a socket that has spliced).
            if self.detect and self.ops.pending(self.src, peek=not self.ever_spliced_in):
                self.strikes += 1
                if self.strikes >= (STRIKES if self.ever_spliced_in else 2):
                    self._to_copy("redirected")
                return 0  # retry now: the bytes are there, by splice or by copy
            self.strikes = 0  # "in a row": a real wait ends the series
            self.pipe = None
            self.pipes.put(p)  # empty: an idle direction holds no pipe
            return WANT_READ
        except OSError as e:
            if e.errno in _RESET:
                return SRC_RESET
            if e.errno in _CANT_SPLICE:
                self._to_copy(errno.errorcode[e.errno])
                return 0
            raise
        if n == 0:
            # EOF for splice: the FIN is in the receive queue. Redirected bytes sent
            # before it may still wait in the psock queue, which only recvmsg reads.
            if self.detect and self.ops.pending(self.src, peek=True):
                self._to_copy("redirected")
                return 0
            self.eof = True
        else:
            p.fill += n
            self.ever_spliced_in = True
            self.strikes = 0
        return 0

    def _copy_in(self) -> int:
        try:
            n = self.ops.recv_into(self.src, self.buf)
        except BlockingIOError:
            return WANT_READ
        except OSError as e:
            if e.errno in _RESET:
                return SRC_RESET
            raise
        if n == 0:
            self.eof = True
        else:
            self.start, self.end = 0, n
            if self.mode == "auto" and n >= self.splice_min and not self.splicing:
                self.splicing = True  # a bulk transfer: splice from the next read on
        return 0

    def release(self) -> None:
        """The connection is closing: give the pipe back (closed if it holds bytes)."""
        if self.pipe is not None:
            self.pipes.put(self.pipe)
            self.pipe = None
        self.buf = self.shared_buf
        self.start = self.end = 0
