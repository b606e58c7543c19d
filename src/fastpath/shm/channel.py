"""Channel: a single-producer single-consumer ring of message slots in one sealed memfd.

Set up once over a Unix socket (one CHANNEL message carrying the memfd and two eventfds);
after that no message touches the kernel unless a side has to sleep. The producer loans a
slot, writes the payload in place and commits it; the consumer gets a read-only memoryview
of the slot (no copy) and releases it when done.

Memory ordering (why a reader never sees a slot before its bytes are all there):
  The payload bytes and the slot's length word are written with plain stores (a memcpy in
  the memoryview assignment). The producer then publishes the message by storing the new
  `head` with release semantics (fastpath._atomic: __atomic with RELEASE, or stronger).
  The consumer reads `head` with an acquire load and only then reads the length and the
  payload. Release/acquire pairing guarantees that every store sequenced before the release
  (all payload bytes, the length) is visible to any thread that acquires the stored value;
  and the acquire forbids the consumer's later payload reads from being performed before
  the head load. So it does not matter that the payload is written with many non-atomic,
  possibly torn stores: nobody reads them until the single aligned 64-bit head word says
  so, and that word is never torn. The same pairing runs the other way for reuse: the
  consumer stores `tail` with release after it has finished reading a slot, and the
  producer acquires `tail` before overwriting it, so a slot is never rewritten under a
  reader. CPython cannot reorder either (the atomics are C calls with compiler barriers).

Sleeping without losing a wakeup (the Dekker pattern, one per direction):
  consumer: waiting := 1 (seq_cst); re-read head; sleep on the data eventfd only if empty.
  producer: head := n+1 (seq_cst exchange); read waiting; write the eventfd if it is 1.
  With both stores sequentially consistent, at least one side sees the other's store: the
  consumer sees the new head, or the producer sees waiting == 1 and wakes it. Eventfd
  wakeups may be spurious; every wait re-checks the ring. An eventfd write costs a syscall
  only when the peer is actually asleep, so a busy-polling peer costs none.

Peer death: each side polls the connection socket (EOF once every copy of the peer's
end is closed) and, when SO_PEERCRED gave a pid in our namespace, a pidfd (readable once
that process exits, even if a child it forked still holds the socket), next to its
eventfd. The peer is the process that connected or accepted: a channel end handed on to
another process dies with the one that set it up. (Were the pid reused between connect
and pidfd_open, the pidfd would watch a stranger; the socket EOF still tells.) A clean
close sets a closed flag in the control page first, so "closed" (ChannelClosed) and "died"
(PeerDied) are told apart; committed messages are still delivered after either.
"""

from __future__ import annotations

import array
import errno
import os
import select
import socket
import time

from fastpath._atomic import AtomicView
from fastpath.errors import KernelError, UsageError
from fastpath.shm import header as hdr
from fastpath.shm import ring
from fastpath.shm._ring import RingEnd
from fastpath.shm.errors import ChannelClosed, ChannelTimeout, HandoverRefused, PeerDied
from fastpath.shm.handover import (
    MAX_REGION,
    Connection,
    check_eventfd,
    close_fds,
    map_received,
    recv_message,
    send_message,
)
from fastpath.shm.memfd import Region

_EFD_FLAGS = getattr(os, "EFD_CLOEXEC", 0o2000000) | getattr(os, "EFD_NONBLOCK", 0o4000)


class _Side:
    """What producer and consumer share: the mapping, the atomics, the fds, the waiting."""

    role = "side"
    _peer_role: str        # set by Producer and Consumer
    _watch_off: int        # the counter the peer moves when we may go on
    _timeout_reason: str
    _buf: memoryview | None

    def close(self) -> None:
        raise NotImplementedError

    def _watched(self) -> int:
        """The value of the _watch_off counter that the last ready() check saw."""
        raise NotImplementedError

    def __init__(self, conn: Connection, region: Region, layout: ring.RingLayout,
                 wait_efd: int, wake_efd: int, spin: float) -> None:
        self.conn = conn
        self.region = region
        self.layout = layout
        self.slots = layout.slots
        self.capacity = layout.capacity
        # slot offsets computed once: the per-message path is a list index, not arithmetic
        self._len_at = [layout.length_offset(i) for i in range(layout.slots)]
        self._data_at = [layout.payload_offset(i) for i in range(layout.slots)]
        self.spin = spin
        self._spin_ns = int(spin * 1e9)
        self._wait_efd = wait_efd   # we sleep on this one
        self._wake_efd = wake_efd   # we write this one to wake the peer
        self._a = AtomicView(region.buf)
        self._buf = region.buf
        self._pidfd = -1
        self._dead = False
        self._closed = False
        pid = conn.peer.pid
        if pid > 0 and pid != os.getpid():
            try:
                self._pidfd = os.pidfd_open(pid)
            except OSError:
                self._pidfd = -1  # pid not in our namespace or already gone: socket EOF still tells
        self._poller = select.poll()
        for fd in (wait_efd, conn.fileno(), self._pidfd):
            if fd >= 0:
                self._poller.register(fd, select.POLLIN)

    # -- waiting ---------------------------------------------------------------------------
    def _wait(self, ready, waiting_off: int, peer_closed_off: int, timeout: float | None,
              what: str, spin: bool = True) -> None:
        """Return once ready() is true; raise ChannelClosed / PeerDied / ChannelTimeout.
        spin=False: the caller has spun already (in RingEnd), go straight to sleeping."""
        a = self._a
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if self.spin > 0 and spin:
            # spin in C on the one word the peer moves (head for a consumer, tail for a
            # producer): the change is seen one cache-line transfer after it happens
            end = now + self.spin if deadline is None else min(deadline, now + self.spin)
            while True:
                if ready():
                    return
                spin_left = end - time.monotonic()
                if spin_left <= 0:
                    break
                a.wait_change(self._watch_off, self._watched(), int(spin_left * 1e9))
        while True:
            a.exchange(waiting_off, 1)
            if ready():
                a.store(waiting_off, 0)
                return
            if a.load(peer_closed_off):
                a.store(waiting_off, 0)
                raise ChannelClosed(f"the {self._peer_role} closed the channel", op=what)
            if self._dead:
                a.store(waiting_off, 0)
                raise PeerDied(f"the {self._peer_role} (pid {self.conn.peer.pid}) died",
                               op=what, errno=errno.EPIPE)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                a.store(waiting_off, 0)
                raise ChannelTimeout(f"{self._timeout_reason} for {timeout:g}s", op=what,
                                     errno=errno.ETIMEDOUT)
            try:
                events = self._poller.poll(None if left is None else max(1, int(left * 1000 + 0.999)))
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == self._wait_efd:
                    try:
                        os.eventfd_read(fd)
                    except BlockingIOError:
                        pass  # the counter was drained already: a spurious wakeup
                elif not self._dead and (fd == self._pidfd or self._socket_gone()):
                    self._mark_dead()

    def _mark_dead(self) -> None:
        """The peer is gone: stop polling its socket and pidfd (both stay readable)."""
        self._dead = True
        for f in (self.conn.fileno(), self._pidfd):
            if f >= 0:
                self._poller.unregister(f)

    def _socket_gone(self) -> bool:
        """The peer never sends after set-up: readable means EOF, or garbage we discard."""
        try:
            data, anc, _, _ = self.conn.sock.recvmsg(64, socket.CMSG_SPACE(64 * 4),
                                                     socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        for level, kind, payload in anc:  # never keep fds nobody asked for
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                close_fds(array.array("i", payload[: len(payload) - len(payload) % 4]))
        return not data and not anc

    def _wake_peer(self, waiting_off: int) -> None:
        if self._a.load(waiting_off):
            try:
                os.eventfd_write(self._wake_efd, 1)
            except BlockingIOError:
                pass  # counter at its maximum: the peer has plenty of wakeups pending

    def peer_alive(self) -> bool:
        """A non-blocking check, one poll(2)."""
        if not self._dead:
            for fd, _ in self._poller.poll(0):
                if not self._dead and (fd == self._pidfd or
                                       (fd == self.conn.fileno() and self._socket_gone())):
                    self._mark_dead()
        return not self._dead

    # -- closing ---------------------------------------------------------------------------
    def _close(self, closed_off: int, peer_waiting_off: int) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._a.exchange(closed_off, 1)  # before the socket closes: "closed", not "died"
            try:
                os.eventfd_write(self._wake_efd, 1)  # wake the peer, sleeping or not
            except OSError:
                pass
            self._release_views()
            self._a.release()
        finally:
            close_fds([fd for fd in (self._wait_efd, self._wake_efd, self._pidfd) if fd >= 0])
            self._wait_efd = self._wake_efd = self._pidfd = -1
            self._buf = None
            self.conn.close()
            try:
                self.region.close()
            except BufferError as e:  # a slice of a message outlived its release()
                raise UsageError("a view of a channel slot is still held; drop it before close",
                                 op=f"close {self.role}") from e

    def _release_views(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Producer(_Side):
    role = "producer"
    _peer_role = "consumer"
    _timeout_reason = "ring full: the consumer released nothing"
    _watch_off = ring.OFF_TAIL

    def _watched(self) -> int:
        return self._r.tail

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        # the per-message path, in C (shm/_ring.c): loan/commit decline (None) whenever
        # they cannot finish, and the methods below then say why, wait or raise
        assert self._buf is not None
        self._r = _ring_end(self, self._buf, producer=True)
        # the public calls are RingEnd's own (no Python frame per message); the methods
        # below are what they fall back to, and the documented API
        self.loan = self._r.api_loan  # type: ignore[method-assign]
        self.commit = self._r.api_commit  # type: ignore[method-assign,assignment]

    def _has_space(self) -> bool:
        self._r.refresh()  # acquire: the consumer is done with the slot
        return ring.free(self._r.head, self._r.tail, self.slots) > 0

    def loan(self, timeout: float | None = None) -> memoryview:
        """A writable view of the next free slot (`capacity` bytes). Blocks while the ring is
        full (backpressure) up to `timeout` seconds; 0 means do not wait."""
        # a spinning side spins in C first, unless the timeout is shorter than the spin;
        # then _loan_slow says why it cannot, waits or raises
        return self._r.api_loan(timeout)

    def _loan_slow(self, timeout: float | None, spin: bool) -> memoryview:
        while True:
            if self._closed:
                raise ChannelClosed("channel is closed", op="loan")
            if self._r.out:
                raise UsageError("a slot is already on loan; commit it first", op="loan")
            if self._a.load(ring.OFF_CONSUMER_CLOSED):
                raise ChannelClosed("the consumer closed the channel", op="loan")
            if not self._has_space():  # raises RingError on impossible counters
                self._wait(self._has_space, ring.OFF_PRODUCER_WAITING, ring.OFF_CONSUMER_CLOSED,
                           timeout, "loan", spin)
                spin = True
            v = self._r.loan()
            if v is not None:
                return v

    def commit(self, length: int) -> None:
        """Publish the loaned slot's first `length` bytes as the next message."""
        self._r.api_commit(length)  # wakes a sleeping consumer; _commit_refused otherwise

    def _commit_refused(self, length: int) -> None:
        if not self._r.out:
            raise UsageError("no slot on loan", op="commit")
        raise UsageError(f"length {length} outside slot capacity {self.capacity}", op="commit")

    def send(self, data, timeout: float | None = None) -> None:
        """Copy `data` into a slot and commit it (one memcpy)."""
        n = len(data)
        if n > self.capacity:
            raise UsageError(f"message of {n} bytes exceeds slot capacity {self.capacity}", op="send")
        view = self.loan(timeout)
        view[:n] = data
        self.commit(n)

    def _release_views(self) -> None:
        self._r.close()

    def close(self) -> None:
        self._close(ring.OFF_PRODUCER_CLOSED, ring.OFF_CONSUMER_WAITING)


class Consumer(_Side):
    role = "consumer"
    _peer_role = "producer"
    _timeout_reason = "no message"
    _watch_off = ring.OFF_HEAD

    def _watched(self) -> int:
        return self._r.head

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        assert self._buf is not None
        self._rbuf = self._buf.toreadonly()  # messages are slices of this one
        self._r = _ring_end(self, self._rbuf, producer=False)
        self.read = self._r.api_read  # type: ignore[method-assign]  # as in Producer
        self.release = self._r.api_release  # type: ignore[method-assign]

    def _has_message(self) -> bool:
        self._r.refresh()  # acquire: the slot's bytes are all visible now
        return ring.used(self._r.head, self._r.tail, self.slots) > 0

    def read(self, timeout: float | None = None) -> memoryview:
        """A read-only view of the next message, in place. Valid until release()."""
        return self._r.api_read(timeout)  # as Producer.loan

    def _read_slow(self, timeout: float | None, spin: bool) -> memoryview:
        while True:
            if self._closed:
                raise ChannelClosed("channel is closed", op="read")
            if self._r.out:
                raise UsageError("the previous message is not released yet", op="read")
            if not self._has_message():  # raises RingError on impossible counters
                self._wait(self._has_message, ring.OFF_CONSUMER_WAITING, ring.OFF_PRODUCER_CLOSED,
                           timeout, "read", spin)
                spin = True
            v = self._r.read()
            if v is not None:
                return v
            # a message is there and read() declined: its length word is impossible
            length = self._a.load(self.layout.length_offset(self._r.tail))
            ring.check_length(length, self.capacity)  # raises, saying why

    def release(self) -> None:
        """Give the slot back to the producer; the view from read() is invalid afterwards."""
        self._r.api_release()  # wakes a sleeping producer; _release_refused otherwise

    def _release_refused(self) -> None:
        raise UsageError("no message to release", op="release")

    def recv(self, timeout: float | None = None) -> bytes:
        """read() + copy + release(), for callers that want bytes."""
        data = bytes(self.read(timeout))
        self.release()
        return data

    def __iter__(self):
        """Copies of each message until the producer closes (a death still raises)."""
        while True:
            try:
                yield self.recv()
            except ChannelClosed:
                return

    def _release_views(self) -> None:
        self._r.close()
        self._rbuf.release()

    def close(self) -> None:
        self._close(ring.OFF_CONSUMER_CLOSED, ring.OFF_PRODUCER_WAITING)


def _ring_end(side: _Side, base: memoryview, producer: bool) -> RingEnd:
    lay = side.layout
    assert side._buf is not None  # None only once closed
    end = RingEnd(side._buf, base, producer, lay.slots, lay.capacity, lay.stride,
                  ring.CONTROL_SIZE, ring.SLOT_HEADER, ring.OFF_HEAD, ring.OFF_TAIL,
                  ring.OFF_CONSUMER_WAITING if producer else ring.OFF_PRODUCER_WAITING,
                  ring.OFF_CONSUMER_CLOSED if producer else ring.OFF_PRODUCER_CLOSED)
    end.bind(side, side._wake_efd, side.spin)
    return end


# --- set-up over the connection ---------------------------------------------------------

def _make(role: str, conn: Connection, region: Region, layout: ring.RingLayout,
          data_efd: int, space_efd: int, spin: float) -> Producer | Consumer:
    if role == "producer":
        return Producer(conn, region, layout, space_efd, data_efd, spin)
    return Consumer(conn, region, layout, data_efd, space_efd, spin)


def offer(conn: Connection, *, slots: int = 8, capacity: int = 64 * 1024, role: str = "producer",
          spin: float = 0.0, populate: bool = True, timeout: float | None = 30.0,
          name: str = "fp-channel") -> Producer | Consumer:
    """Create a channel, hand it to the peer on `conn`, and return our end (`role`)."""
    if role not in ("producer", "consumer"):
        raise UsageError(f"role must be producer or consumer, not {role!r}")
    layout = ring.RingLayout(slots, capacity)
    region = Region.create(layout.size, name, populate=False)
    efds: list[int] = []
    try:
        if populate:
            region.populate()
        region.buf[: len(layout.identity())] = layout.identity()
        region.seal()  # SHRINK|GROW: the peer maps it writable, and it can never SIGBUS
        for _ in range(2):
            efds.append(_eventfd())
        h = hdr.Header(hdr.KIND_CHANNEL, size=region.size, arg0=slots, arg1=capacity,
                       flags=hdr.FLAG_PRODUCER if role == "producer" else 0)
        send_message(conn.sock, h, [region.fd, efds[0], efds[1]])
        conn.wait_reply(timeout, "offer channel")
        return _make(role, conn, region, layout, efds[0], efds[1], spin)
    except BaseException:
        close_fds(efds)
        region.close()
        raise


def accept(conn: Connection, *, spin: float = 0.0, timeout: float | None = 30.0,
           max_size: int = MAX_REGION) -> Producer | Consumer:
    """Receive a channel offered on `conn`, check it, and return our end."""
    h, _, fds = recv_message(conn.sock, timeout, "accept channel")
    region = None
    try:
        if h.kind != hdr.KIND_CHANNEL:
            raise HandoverRefused(f"expected a channel, got {h.kind_name}", op="accept channel",
                                  errno=errno.EPROTO)
        if h.size > max_size:
            raise HandoverRefused(f"channel of {h.size} bytes exceeds the {max_size}-byte limit",
                                  op="accept channel", errno=errno.EFBIG)
        check_eventfd(fds[1])
        check_eventfd(fds[2])
        memfd, fds[0] = fds[0], -1  # map_received owns it from here, closes it on failure
        region = map_received(memfd, h.size, writable=True, populate=True)
        try:
            layout = ring.RingLayout.from_identity(bytes(region.buf[:32]), region.size)
        except ring.RingError as e:
            raise HandoverRefused(str(e), op="accept channel", errno=errno.EPROTO) from e
        if (layout.slots, layout.capacity) != (h.arg0, h.arg1):
            raise HandoverRefused("header and control page disagree on the ring shape",
                                  op="accept channel", errno=errno.EPROTO)
        role = "consumer" if h.flags & hdr.FLAG_PRODUCER else "producer"
        side = _make(role, conn, region, layout, fds[1], fds[2], spin)
    except BaseException as e:
        close_fds([fd for fd in fds if fd >= 0])
        if region is not None:
            region.close()
        if isinstance(e, HandoverRefused):
            conn.reply(False, str(e), e.errno or 0)
        raise
    conn.reply(True)
    return side


def _eventfd() -> int:
    try:
        return os.eventfd(0, _EFD_FLAGS)
    except OSError as e:
        raise KernelError.from_oserror("eventfd", e) from e
