"""One proxy worker: an epoll loop over non-blocking sockets, forwarding each accepted
connection to a backend with two `forward.Direction`s.

Kernel facts and decisions:
- Listeners are the master's SO_REUSEPORT sockets for this worker's slot, inherited
  through fork; the kernel spreads new connections over the slots. Because the master
  keeps them open across reloads, a reload never closes a listening socket, so no
  connection waiting in an accept queue is reset. An fd shared with another process
  stays in an epoll set after this process closes its copy (epoll(7), "Questions and
  answers" 6), so listeners are unregistered explicitly before they are closed.
- Connection sockets are registered once, edge-triggered, for IN|OUT|RDHUP: a
  Direction reads until EAGAIN, so no edge is lost, and no epoll_ctl is needed per
  transfer. A Direction that spends its budget is put on a ready list instead.
- accept() failing with EMFILE/ENFILE/ENOBUFS/ENOMEM pauses accepting (the listener
  leaves the epoll set) until a connection closes or 100 ms pass: connections wait in
  the kernel's queue instead of making the loop spin.
- A reset is carried as a reset: SO_LINGER {on, 0} then close() sends RST (tcp(7)).
- A worker's death is a reset too: every proxied socket lingers {on, 0} from the start
  (clients inherit it from the listener), so the kernel resets them when the worker dies;
  a graceful close turns it off first (splice.py). At the drain deadline the connections
  still open are reset, never closed as if they had ended.
- A direction that ends holds its FIN until the loop has looked at the next round of
  events (`forward.Direction.hold_fin`). A client that closes as soon as it has its answer
  (every HTTP client given `Connection: close`) has usually closed by then, and a
  connection ended both ways is closed with one close(2) per socket: no shutdown(2) calls,
  and the proxy is the passive closer on both sides, so it keeps no TIME_WAIT sockets.
- In copy and auto modes, established connections are forwarded by `_lane.Lane`, in C:
  it owns the epoll wait, moves the bytes of the connections handed to it, and gives back
  every other event and every connection it is done with (ended both ways, reset, failed,
  or turned bulk, which the worker then splices). The worker keeps accept, connect,
  balancing, checks, timers and every close; a connection is in the lane from connected
  to its end, so a worker with a fault-injecting `ops` (tests) forwards in Python.
- Connection sockets are `_socket.socket`, the C type under `socket.socket`: the same
  methods without socket.py's per-object Python layer (its __init__ and close() showed
  as 15 % of a worker's time at 10k connections/s).
- SIGTERM: listeners leave the epoll set, established connections run to their end or
  to `drain-timeout`, then the worker exits.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import resource
import select
import signal
import socket
import time
from _socket import socket as RawSocket
from dataclasses import replace

from fastpath.kernel.files import atomic_write
from fastpath.proxy import errnos, forward
from fastpath.proxy._lane import BULK, FAILED, Lane, accept
from fastpath.proxy.accel import AccelProbe
from fastpath.proxy.balance import Backend
from fastpath.proxy.config import ProxyConfig
from fastpath.proxy.forward import Direction
from fastpath.proxy.health import HealthChecks
from fastpath.proxy.pipepool import PipeCache, PipePool
from fastpath.proxy.service import ServiceState
from fastpath.proxy.splice import LINGER_ABORT, SocketOps, drain_close, graceful_close, reset_close
from fastpath.rcu.table import SharedTable

log = logging.getLogger("fastpath.proxy")

ET = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
IN_EV = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
OUT_EV = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
# accept(2) errors, decided in proxy/errnos.py: out of fds or memory now -> pause a tick
# (the kernel's queue holds the connections); that one connection gone -> take the next
_ACCEPT_PAUSE_ERRNOS = errnos.of(errnos.ACCEPT, errnos.Decision.PAUSE_ACCEPT)
_ACCEPT_SKIP_ERRNOS = errnos.of(errnos.ACCEPT, errnos.Decision.SKIP_ACCEPTED)
_PEER_GONE_ERRNOS = errnos.of(errnos.DATA, errnos.Decision.PEER_GONE)  # the Lane's resets
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK  # no ioctl to make it so
FD_RESERVE = 16      # fds kept free for a backend socket, pipes, checks, the status file
TICK = 0.1            # timer resolution: timeouts are checked this often
PUBLISH_EVERY = 0.5   # status file refresh
ACCEPT_BATCH = 64
TABLE_KEY = b"services"   # SharedTable key: JSON {service: [[ip, port], ...]}


class Conn:
    __slots__ = ("id", "svc", "client", "backend", "be", "peer", "c2b", "b2c", "r_c2b",
                 "r_b2c", "connecting", "deadline", "last", "closed", "fin_held", "in_lane",
                 "modes", "client_events", "tries")

    def __init__(self, cid, svc, client, peer) -> None:
        self.id = cid
        self.svc = svc
        self.client = client
        self.peer = peer
        # None only until _connect sets them, before any use: typed as what they hold, so
        # the hot path pays no checks for the connecting window
        self.backend: RawSocket = None  # type: ignore[assignment]
        self.be: Backend = None  # type: ignore[assignment]
        self.c2b: Direction = None  # type: ignore[assignment]
        self.b2c: Direction = None  # type: ignore[assignment]
        self.r_c2b = self.r_b2c = forward.WANT_READ
        self.connecting = True
        self.deadline = 0.0
        self.last = 0.0
        self.closed = False
        self.fin_held = False   # on the worker's fin_later list
        self.in_lane = False    # forwarded by the Lane (c2b, b2c stay None meanwhile)
        self.modes = ("copy", "copy", True)  # c2b mode, b2c mode, redirect detection
        self.client_events = 0  # epoll masks of the client seen while connecting
        self.tries = 0          # backends tried after the first (Service.retries)


class Worker:
    def __init__(self, cfg: ProxyConfig, listeners: dict[str, socket.socket], slot: int,
                 generation: int, status_path: str | None = None, ops: SocketOps | None = None,
                 table_fd: int | None = None) -> None:
        self.cfg = cfg
        self.slot = slot
        self.generation = generation
        self.status_path = status_path
        self.ops = ops or SocketOps()
        self.ep = select.epoll()
        self.pool = PipePool(size=cfg.pipe_size, cap=cfg.pipe_cap, idle=cfg.pipe_idle)
        self.pipes = PipeCache(self.pool)
        self.shared_buf = bytearray(forward.COPY_BUFSIZE)
        self.services: dict[int, ServiceState] = {}
        nworkers = cfg.worker_count()
        for svc in cfg.services:
            ls = listeners[svc.name]
            self.services[ls.fileno()] = ServiceState(svc, ls, nworkers)
        self.conns: dict[int, tuple[Conn, bool]] = {}   # fd -> (conn, is_client)
        self.checks = HealthChecks(self.ep)
        self.ready: collections.deque = collections.deque()
        self.lane: Lane | None = None
        if type(self.ops) is SocketOps and cfg.mode != "splice":
            self.lane = Lane(self.ep.fileno(), sorted(_PEER_GONE_ERRNOS), forward.COPY_BUFSIZE,
                             cfg.splice_min if cfg.mode == "auto" else 0)
        self.fin_later: list[Conn] = []   # connections with a FIN held (see the docstring)
        self.live: dict[int, Conn] = {}
        self._cid = 0
        self.accept_paused_until = 0.0
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.draining = False
        self.drain_deadline = 0.0
        self.stop = False
        self.publish_now = False
        self.counters: collections.Counter[str] = collections.Counter()
        self.accel = AccelProbe() if cfg.accel_check else None
        # the service table the master publishes (fastpath.rcu SharedTable): backends
        # change in place on reload, read here without a lock or a syscall
        self.table: SharedTable | None = None
        self._table_raw: bytes | None = None
        if table_fd is not None:
            self.table = SharedTable.attach(table_fd)
        self.by_name = {st.svc.name: st for st in self.services.values()}
        self.started = time.time()

    # --- listeners

    def _listen_on(self) -> None:
        for fd in self.services:
            self.ep.register(fd, select.EPOLLIN)

    def _pause(self, st: ServiceState) -> None:
        if not st.paused:
            st.paused = True
            self.ep.modify(st.listener.fileno(), 0)

    def _resume(self, st: ServiceState) -> None:
        if st.paused and not self.draining and st.conns < st.limit:
            st.paused = False
            self.ep.modify(st.listener.fileno(), select.EPOLLIN)

    def _accept(self, st: ServiceState, now: float) -> None:
        lfd = st.listener.fileno()
        for _ in range(ACCEPT_BATCH):
            if st.conns >= st.limit:
                self._pause(st)  # maxconn: new ones wait in the kernel's accept queue
                return
            try:
                cfd, peer = accept(lfd)  # non-blocking already (_lane.c says why)
            except BlockingIOError:
                return  # the accept queue is empty
            except OSError as e:
                if e.errno in _ACCEPT_PAUSE_ERRNOS:
                    self._pause_accepting(now, os.strerror(e.errno or 0))
                    return
                if e.errno in _ACCEPT_SKIP_ERRNOS:
                    log.debug("%s: accept: %s", st.svc.name, errnos.why(errnos.ACCEPT, e.errno))
                    continue
                raise
            client = RawSocket(st.family, _STREAM_NONBLOCK, 0, cfd)
            fd = cfd
            st.accepted += 1
            self._cid += 1
            conn = Conn(self._cid, st, client, peer)
            conn.last = now
            try:
                self._connect(conn, now)
            except OSError as e:
                self._broken(conn, e)
            if fd >= self.fd_limit - FD_RESERVE:
                # fds are allocated lowest first, so fd ~ fds open: this one was served
                # from the reserve; the next ones wait in the kernel's queue
                self._pause_accepting(now, f"{fd + 1} of {self.fd_limit} fds in use")
                return

    def _pause_accepting(self, now: float, why: str) -> None:
        if not self.accept_paused_until:
            log.warning("accepting paused: %s", why)
            self.counters["accept_paused"] += 1
        self.accept_paused_until = now + 0.1
        for s in self.services.values():
            self._pause(s)

    def _fds_in_use(self) -> int:
        try:
            return len(os.listdir("/proc/self/fd")) - 1  # minus listdir's own
        except OSError:
            return self.fd_limit  # EMFILE: as full as it gets

    # --- backends

    def _connect(self, conn: Conn, now: float) -> None:
        st = conn.svc
        be = st.balancer.pick(avoid=conn.be)
        if be is None:
            st.refused += 1
            log.warning("%s: no backend up; closing client %s", st.svc.name, conn.peer[0])
            drain_close(conn.client)
            return
        try:
            bs = RawSocket(socket.AF_INET6 if ":" in be.addr[0] else socket.AF_INET,
                           socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as e:
            log.warning("%s: backend socket: %s; closing client", st.svc.name, e.strerror)
            st.refused += 1
            conn.client.close()
            if e.errno in _ACCEPT_PAUSE_ERRNOS:
                self._pause_accepting(now, os.strerror(e.errno or 0))
            return
        # forwarded segments leave as they come; Nagle would hold the small ones (client
        # sockets inherit TCP_NODELAY from the listener: tcp_create_openreq_child copies it)
        bs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # a worker that dies resets its connections (proxy/splice.py, LINGER_ABORT)
        bs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        err = bs.connect_ex(be.addr)
        conn.backend = bs
        conn.be = be
        be.active += 1
        be.total += 1
        st.conns += 1
        conn.deadline = now + st.svc.connect_timeout
        self.live[conn.id] = conn
        cfd, bfd = conn.client.fileno(), bs.fileno()
        self.conns[cfd] = (conn, True)
        self.conns[bfd] = (conn, False)
        self.ep.register(cfd, ET)
        self.ep.register(bfd, ET)
        if err not in (0, errno.EINPROGRESS):
            self._connect_failed(conn, err)
        elif err == 0:
            self._connected(conn, now)

    def _connect_failed(self, conn: Conn, err: int, why: str | None = None) -> None:
        """The backend's connect was refused, unreachable or timed out: nothing has reached
        the client yet, so another backend is tried (up to the service's `retries`, as
        HAProxy's retries with option redispatch); only then is the client closed."""
        be = conn.be
        be.errors += 1
        self.counters["backend_errors"] += 1
        st = conn.svc
        reason = why or f"connect: {os.strerror(err)}"
        if st.svc.check is not None and be.up:
            # down at once; the health checks bring it back when it answers again
            be.up = False
            be.oks = 0
            log.warning("%s: backend %s down (%s)", st.svc.name, be.label, reason)
        if conn.tries < st.svc.retries and st.balancer.pick(avoid=be, peek=True) is not None:
            log.info("%s: backend %s: %s; client %s:%s tried on another backend", st.svc.name,
                     be.label, reason, conn.peer[0], conn.peer[1])
            conn.tries += 1
            self.counters["retries"] += 1
            self._retry(conn)
            return
        log.warning("%s: backend %s: %s; closing client %s:%s", st.svc.name, be.label, reason,
                    conn.peer[0], conn.peer[1])
        self._close(conn, clean=True)

    def _retry(self, conn: Conn) -> None:
        """Drop the failed backend socket and connect the same client to another backend."""
        bs = conn.backend
        self.conns.pop(bs.fileno(), None)
        try:
            self.ep.unregister(bs.fileno())
        except OSError:
            pass
        reset_close(bs)
        conn.be.active -= 1
        conn.svc.conns -= 1
        self.live.pop(conn.id, None)
        self.conns.pop(conn.client.fileno(), None)
        try:
            self.ep.unregister(conn.client.fileno())
        except OSError:
            pass
        now = time.monotonic()
        try:
            self._connect(conn, now)
        except OSError as e:
            self._broken(conn, e)

    def _connected(self, conn: Conn, now: float) -> None:
        conn.connecting = False
        mode, smin = self.cfg.mode, self.cfg.splice_min
        cfd, bfd = conn.client.fileno(), conn.backend.fileno()
        cmode = bmode = mode
        # Redirect detection costs an ioctl per wait; skip it when the cgroup check says
        # no sockops program can put our sockets in a sockhash.
        detect = self.accel is None or self.accel.possible(now)
        if self.accel is not None and mode != "copy" and self.accel.possible(now):
            # bytes sent to a socket in the sockhash may arrive by sk_msg redirect, which
            # splice cannot read: that socket's reading direction copies from the start
            if self.accel.is_accelerated(conn.client):
                cmode = "copy"
                self.counters["accel_sockets"] += 1
            if self.accel.is_accelerated(conn.backend):
                bmode = "copy"
                self.counters["accel_sockets"] += 1
        conn.modes = (cmode, bmode, detect)
        conn.last = now
        if self.lane is not None and cmode != "splice" and bmode != "splice":
            self.lane.add(cfd, bfd, cmode == "auto", bmode == "auto")
            conn.in_lane = True
            # edges seen while connecting were not acted on: pump both once
            for report in self.lane.pump(cfd, conn.client_events):
                self._from_lane(report, now)
            return
        conn.c2b = Direction(cfd, bfd, self.ops, self.pipes, cmode, smin, "c2b", self.shared_buf,
                             detect, conn.backend, hold_fin=True)
        conn.b2c = Direction(bfd, cfd, self.ops, self.pipes, bmode, smin, "b2c", self.shared_buf,
                             detect, conn.client, hold_fin=True)
        self._pump(conn, True, True)

    def _from_lane(self, report: tuple, now: float) -> None:
        """A connection the Lane let go (see _lane.c for the report's fields)."""
        cfd, r1, r2, moved1, moved2, err, pend1, pend2, flags = report
        got = self.conns.get(cfd)
        if got is None:
            return
        conn = got[0]
        conn.in_lane = False
        conn.last = now
        if r1 == FAILED or r2 == FAILED:
            self.counters["bytes_copied"] += moved1 + moved2
            self._broken(conn, OSError(err, os.strerror(err)))
        elif (r1 >= forward.SRC_RESET and r1 != BULK) or (r2 >= forward.SRC_RESET and r2 != BULK):
            self.counters["bytes_copied"] += moved1 + moved2
            self._reset(conn, r1, r2)
        elif flags & 0b10 and flags & 0b10000:  # both directions ended
            self.counters["bytes_copied"] += moved1 + moved2
            self._close(conn, clean=True, ended=True)
        else:  # a bulk transfer: the worker splices from here on
            cmode, bmode, detect = conn.modes
            cfd, bfd = conn.client.fileno(), conn.backend.fileno()
            conn.c2b = self._direction(cfd, bfd, conn.backend, "c2b", cmode, detect, moved1,
                                       pend1, flags)
            conn.b2c = self._direction(bfd, cfd, conn.client, "b2c", bmode, detect, moved2,
                                       pend2, flags >> 3)
            self._pump(conn, True, True)

    def _direction(self, src: int, dst: int, dst_sock, name: str, mode: str, detect: bool,
                   moved: int, pending: bytes, flags: int) -> Direction:
        """A Direction that goes on where the Lane left one (flags: eof, shut, fin_sent,
        then at bit 6 (c2b) or 3 (b2c, shifted) bulk)."""
        d = Direction(src, dst, self.ops, self.pipes, mode, self.cfg.splice_min, name,
                      self.shared_buf, detect, dst_sock, hold_fin=True)
        d.bytes = d.copied = moved
        if pending:
            d.buf = bytearray(pending)
            d.start, d.end = 0, len(pending)
        d.eof, d.shut, d.fin_sent = bool(flags & 1), bool(flags & 2), bool(flags & 4)
        if flags & (1 << 6) and mode == "auto":
            d.splicing = True
        return d

    # --- forwarding

    def _pump(self, conn: Conn, c2b: bool, b2c: bool) -> None:
        if c2b and not conn.c2b.shut:
            conn.r_c2b = r = conn.c2b.pump()
            if r == forward.YIELD:
                self.ready.append(conn)
        if b2c and not conn.b2c.shut:
            conn.r_b2c = r = conn.b2c.pump()
            if r == forward.YIELD:
                self.ready.append(conn)
        r1, r2 = conn.r_c2b, conn.r_b2c
        if r1 >= forward.SRC_RESET or r2 >= forward.SRC_RESET:
            self._reset(conn, r1, r2)
        elif conn.c2b.shut and conn.b2c.shut:
            self._close(conn, clean=True, ended=True)  # close(2) sends the FINs still held
        elif not conn.fin_held and ((conn.c2b.shut and not conn.c2b.fin_sent) or
                                    (conn.b2c.shut and not conn.b2c.fin_sent)):
            conn.fin_held = True
            self.fin_later.append(conn)

    def _send_held_fins(self, held: list[Conn]) -> None:
        """The connections whose FIN waited one round of events and are still half open:
        shutdown(2) now."""
        for conn in held:
            conn.fin_held = False
            if conn.closed:
                continue
            try:
                conn.c2b.send_fin()
                conn.b2c.send_fin()
            except OSError as e:
                self._broken(conn, e)

    def _reset(self, conn: Conn, r1: int, r2: int) -> None:
        # c2b SRC_RESET: client reset; c2b DST_RESET: backend reset; b2c the other way
        backend_side = r1 == forward.DST_RESET or r2 == forward.SRC_RESET
        if backend_side:
            conn.be.errors += 1
            self.counters["backend_resets"] += 1
            log.info("%s: backend %s reset the connection of client %s:%s", conn.svc.svc.name,
                     conn.be.label, conn.peer[0], conn.peer[1])
        else:
            self.counters["client_resets"] += 1
        self._close(conn, clean=False)

    def _close(self, conn: Conn, clean: bool, ended: bool = False) -> None:
        """clean: FIN (after reading what is unread); not clean: RST. ended: both
        directions saw EOF and forwarded it, nothing is unread, a plain close will do."""
        if conn.closed:
            return
        conn.closed = True
        if conn.in_lane:
            conn.in_lane = False
            self.lane.remove(conn.client.fileno())  # type: ignore[union-attr]  # in_lane: a lane
        for d in (conn.c2b, conn.b2c):
            if d is not None:
                self.counters["bytes_spliced"] += d.spliced
                self.counters["bytes_copied"] += d.copied
                if d.fallback:
                    self.counters[f"fallback_{d.fallback}"] += 1
                d.release()
        for s in (conn.client, conn.backend):
            if s is None:
                continue
            fd = s.fileno()
            self.conns.pop(fd, None)
            if ended:
                graceful_close(s)
            elif clean:
                drain_close(s)
            else:
                reset_close(s)
        self.live.pop(conn.id, None)
        st = conn.svc
        st.conns -= 1
        conn.be.active -= 1
        self.counters["closed"] += 1
        if st.paused and not self.accept_paused_until:
            self._resume(st)

    def _broken(self, conn: Conn, e: OSError) -> None:
        """An errno no Direction expects (ENOMEM, EIO...): this connection ends with RST
        on both sides and is logged; the worker and its other connections go on."""
        self.counters["broken"] += 1
        log.error("%s: connection of %s:%s broken: %s", conn.svc.svc.name, conn.peer[0],
                  conn.peer[1], e)
        if conn.be is not None:
            self._close(conn, clean=False)
        else:
            conn.client.close()

    def _on_conn_event(self, conn: Conn, is_client: bool, ev: int, now: float) -> None:
        if conn.closed or conn.in_lane:
            return  # in the lane: an edge from before it took the pair; its first pump read it
        conn.last = now
        if conn.connecting:
            if is_client:
                conn.client_events |= ev
                return  # nothing to forward to yet; _connected pumps both
            # writable without an error: connected (connect(2), EINPROGRESS); only an
            # error or hang-up needs SO_ERROR to say which
            err = conn.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) \
                if ev & (select.EPOLLERR | select.EPOLLHUP) else 0
            if err:
                self._connect_failed(conn, err)
            elif ev & select.EPOLLOUT:
                self._connected(conn, now)
            return
        if is_client:  # client readable -> c2b reads; client writable -> b2c writes
            self._pump(conn, bool(ev & IN_EV), bool(ev & OUT_EV) and conn.r_b2c == forward.WANT_WRITE)
        else:
            self._pump(conn, bool(ev & OUT_EV) and conn.r_c2b == forward.WANT_WRITE, bool(ev & IN_EV))

    # --- health checks

    # --- timers

    def _tick(self, now: float) -> None:
        self.checks.expire(now)
        self.checks.start(self.services.values(), now)
        for conn in list(self.live.values()):
            if conn.connecting:
                if now >= conn.deadline:
                    self.counters["connect_timeouts"] += 1
                    self._connect_failed(conn, errno.ETIMEDOUT, "connect timeout")
            elif now - (self._lane_last(conn) if conn.in_lane else conn.last) >= \
                    conn.svc.svc.idle_timeout:
                self.counters["idle_timeouts"] += 1
                log.info("%s: connection of %s:%s idle for %.1fs; closed", conn.svc.svc.name,
                         conn.peer[0], conn.peer[1], now - conn.last)
                self._close(conn, clean=True)
        if self.table is not None:
            self._read_table()
        if self.accept_paused_until and now >= self.accept_paused_until:
            if self._fds_in_use() < self.fd_limit - FD_RESERVE:
                self.accept_paused_until = 0.0
                for st in self.services.values():
                    self._resume(st)
            else:
                self.accept_paused_until = now + 0.1
        self.pipes.trim(now)

    def _lane_last(self, conn: Conn) -> float:
        assert self.lane is not None  # in_lane
        last = self.lane.last(conn.client.fileno())
        return conn.last if last is None else last

    def _read_table(self) -> None:
        """Apply the master's service table if it changed since the last look (callers
        check that there is a table)."""
        assert self.table is not None
        raw = self.table.lookup(TABLE_KEY)
        if raw is None or raw == self._table_raw:
            return
        self._table_raw = raw
        for name, backends in json.loads(raw).items():
            st = self.by_name.get(name)
            addrs = tuple((h, p) for h, p in backends)
            if st is None or addrs == st.svc.backends:
                continue
            st.svc = replace(st.svc, backends=addrs)
            st.balancer.set_backends(st.svc)
            log.info("%s: backends now %s", name, ", ".join(f"{h}:{p}" for h, p in addrs))

    # --- status

    def status(self) -> dict:
        return {
            "pid": os.getpid(), "slot": self.slot, "generation": self.generation,
            "draining": self.draining, "started": self.started, "updated": time.time(),
            "mode": self.cfg.mode, "connections": len(self.live),
            "pipes": self.pool.stats(), "counters": dict(self.counters),
            "services": [{"name": st.svc.name, "listen": f"{st.svc.listen[0]}:{st.svc.listen[1]}",
                          "accepted": st.accepted, "active": st.conns,
                          "refused": st.refused, "paused": st.paused,
                          "backends": st.balancer.to_list()} for st in self.by_name.values()],
        }

    def publish(self) -> None:
        if not self.status_path:
            return
        try:
            atomic_write(self.status_path, json.dumps(self.status()))
        except OSError:
            pass  # out of fds right now: the next publish catches up

    # --- the loop

    def _begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.cfg.drain_timeout
        for fd, st in self.services.items():
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
            st.listener.close()  # the master's copy keeps the socket for the next generation
        # no listener fds any more: a later socket may get one of those numbers, and an
        # event on it must not be taken for a listener's (accept on it failed with EBADF
        # and ended the worker, and every connection it was draining). Status still lists
        # the services (by_name), with the connections that drain.
        self.services.clear()
        log.info("worker %d (slot %d): draining %d connections", os.getpid(), self.slot,
                 len(self.live))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop", True))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads, not workers
        # `fastpath proxy status` asks for fresh figures (only of workers that have
        # published once, so this handler is in place before any SIGUSR1 comes)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "publish_now", True))
        self._listen_on()
        now = time.monotonic()
        self.checks.start(self.services.values(), now)
        next_tick = now + TICK
        next_pub = now
        poll = self.ep.poll
        lane = self.lane
        conns, services, checks, table = self.conns, self.services, self.checks, self.table
        if table is not None:
            self._read_table()
        while True:
            if self.stop and not self.draining:
                self._begin_drain()
            if self.draining and (not self.live or time.monotonic() >= self.drain_deadline):
                break
            if table is not None:
                table.quiescent()  # holds nothing read from the table across iterations
            held, self.fin_later = self.fin_later, []
            timeout = 0 if self.ready or held else max(0.0, next_tick - time.monotonic())
            done: list = []
            try:
                if lane is not None:
                    events, done = lane.poll(timeout)
                else:
                    events = poll(timeout, 256)
            except InterruptedError:
                self.fin_later[:0] = held
                continue
            now = time.monotonic()
            for report in done:
                self._from_lane(report, now)
            for fd, ev in events:
                got = conns.get(fd)
                if got is not None:
                    try:
                        self._on_conn_event(got[0], got[1], ev, now)
                    except OSError as e:
                        self._broken(got[0], e)
                elif fd in services:
                    self._accept(services[fd], now)
                elif fd in checks:
                    checks.on_event(fd)
            if held:
                self._send_held_fins(held)
            if self.ready:
                batch, self.ready = self.ready, collections.deque()
                for conn in batch:
                    if not conn.closed:
                        try:
                            self._pump(conn, conn.r_c2b == forward.YIELD,
                                       conn.r_b2c == forward.YIELD)
                        except OSError as e:
                            self._broken(conn, e)
            if self.publish_now:
                self.publish_now = False
                self.publish()
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)
                if now >= next_pub:
                    next_pub = now + PUBLISH_EVERY
                    self.publish()
        cut = list(self.live.values())
        if cut:
            # the drain deadline came: these are cut short, so they end in a RST, the way a
            # client learns that it did not get everything
            log.warning("worker %d: drain timeout: resetting %d connections", os.getpid(), len(cut))
            self.counters["drain_resets"] += len(cut)
        for conn in cut:
            self._close(conn, clean=False)
        self.checks.close()
        self.pipes.close()
        self.publish()
        self.ep.close()
        if self.table is not None:
            self.table.close()  # frees the reader slot: no grace period waits for us
        return 0
