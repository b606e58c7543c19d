"""The pipe pool: splice(2) needs a pipe per forwarding direction, and making one costs
more than the transfer it serves. Measured here (`fastpath bench proxy --part pool`, a
loaded 2-CPU VM): pipe2 + F_SETPIPE_SZ(1 MiB) + 2 x close 7.5-25 us in Python, a pooled
PipeCache get + put 0.18-0.4 us (ratio 0.02-0.03).

Rule for this module: pool accounting only; the three syscalls it needs (pipe2, fcntl
F_SETPIPE_SZ, close) come through `PipeOps`, which tests replace.

Three verbs, as in HAProxy's pipe.c: `get` (a clean pipe, or None when the cap is
reached or the kernel refuses: the caller then copies instead), `put` (give back: an
empty pipe is pooled, a pipe that still holds bytes is closed because those bytes
belong to a connection that no longer exists), `kill` (close, after an error).

Two levels: a `PipeCache` per event loop, with no lock, in front of one `PipePool` per
worker process, under a lock, shared by every loop thread of the worker. `cap` bounds
pipes in existence (in use + free, cached or shared): each pipe is 2 fds and up to
`size` bytes of pinned kernel memory.

Unlike HAProxy, free pipes idle for longer than `idle` seconds are closed by `trim`, so
a burst does not pin its pipes' memory and fds forever.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass


class PipeOps:
    """The syscall edge: the real one. Tests pass an object with the same methods."""

    def pipe(self) -> tuple[int, int]:
        return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set_size(self, wfd: int, size: int) -> int:
        return fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, size)

    def close(self, fd: int) -> None:
        os.close(fd)


class Pipe:
    """One pipe: `r`, `w` fds, `size` (its capacity), `fill` (bytes in it, kept by the
    forwarder from splice's return values: the kernel has no cheap way to ask).

    Two bare ints, not kernel.fd.Fd holders: the forwarder hands them to splice(2) on every
    call of the hot loop, and closing goes through the swappable PipeOps. The rule is the
    same: close() closes each once and sets it to -1."""

    __slots__ = ("r", "w", "size", "fill", "idle_since")

    def __init__(self, r: int, w: int, size: int) -> None:
        self.r, self.w, self.size = r, w, size
        self.fill = 0
        self.idle_since = 0.0

    def close(self, ops: PipeOps) -> None:
        """Close both ends once; the numbers are forgotten so a stale use fails loudly."""
        for fd in (self.r, self.w):
            if fd >= 0:
                try:
                    ops.close(fd)
                except OSError:
                    pass
        self.r = self.w = -1

    @property
    def closed(self) -> bool:
        return self.r < 0


@dataclass
class PipeCounters:
    created: int = 0       # pipes made by pipe2()
    reused: int = 0        # gets served from a free list
    closed: int = 0        # pipes closed (dirty, killed, trimmed, shutdown)
    closed_dirty: int = 0  # of those, closed because they still held bytes
    closed_idle: int = 0   # of those, closed by trim()
    failed: int = 0        # gets that returned None (cap reached or pipe2 refused)
    resize_failed: int = 0  # F_SETPIPE_SZ refusals (tolerated: the pipe keeps its size)
    in_use: int = 0
    free: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


class PipePool:
    """The shared level: a free list under a lock, the cap, the counters.

    Only events that change the number of pipes (create, close) or touch the shared list
    take the lock. `in_use` and `free` are derived when asked (`counters`): free is the
    length of every free list, in_use the rest of the pipes alive, so a cache's get/put
    costs no lock at all (measured: 0.18 us per get + put)."""

    def __init__(self, size: int = 65536, cap: int = 4096, idle: float = 30.0,
                 ops: PipeOps | None = None, clock=time.monotonic) -> None:
        self.size = size
        self.cap = cap
        self.idle = idle
        self.ops = ops or PipeOps()
        self.clock = clock
        self._c = PipeCounters()      # created/closed/...; in_use and free unused here
        self._alive = 0               # pipes in existence, reserved slots included
        self._free: list[Pipe] = []   # LIFO: the warmest pipe goes out first
        self._lock = threading.Lock()
        self._caches: list[PipeCache] = []

    @property
    def counters(self) -> PipeCounters:
        with self._lock:
            c = PipeCounters(**vars(self._c))
            cached = sum(len(k._free) for k in self._caches)
            c.reused += sum(k.reused for k in self._caches)
            c.free = len(self._free) + cached
            c.in_use = self._alive - c.free
        return c

    def _new(self) -> Pipe | None:
        """Make a pipe; None if the kernel refuses (EMFILE, ENFILE, ENOMEM)."""
        try:
            r, w = self.ops.pipe()
        except OSError:
            return None
        size = 65536  # Linux default pipe capacity (16 pages)
        if self.size and self.size != size:
            try:
                size = self.ops.set_size(w, self.size)
            except OSError as e:
                # EPERM above /proc/sys/fs/pipe-max-size for non-root, or over the
                # per-user pipe-user-pages limits: the pipe still works at its size.
                if e.errno not in (errno.EPERM, errno.EINVAL, errno.EBUSY, errno.ENOMEM):
                    raise
                self._c.resize_failed += 1
        return Pipe(r, w, size)

    def get(self) -> Pipe | None:
        c = self._c
        with self._lock:
            if self._free:
                c.reused += 1
                return self._free.pop()
            if self._alive >= self.cap:
                c.failed += 1
                return None
            self._alive += 1  # reserve the slot before the syscall, outside the lock
        p = self._new()
        with self._lock:
            if p is None:
                self._alive -= 1
                c.failed += 1
            else:
                c.created += 1
        return p

    def put(self, p: Pipe) -> None:
        """Give back a pipe from `get`. Dirty (fill > 0) pipes are closed, never pooled."""
        if p.fill:
            self._close(p, dirty=True)
            return
        p.idle_since = self.clock()
        with self._lock:
            self._free.append(p)

    def kill(self, p: Pipe) -> None:
        """Close a pipe after an error on it; it never returns to a free list."""
        self._close(p, dirty=bool(p.fill))

    def _close(self, p: Pipe, dirty: bool = False) -> None:
        p.close(self.ops)
        with self._lock:
            self._alive -= 1
            self._c.closed += 1
            self._c.closed_dirty += dirty

    def trim(self, now: float | None = None) -> int:
        """Close free pipes idle for longer than `idle` seconds (0: never). Returns how
        many were closed. The list is LIFO, so the idle ones are at the bottom."""
        if not self.idle:
            return 0
        now = self.clock() if now is None else now
        with self._lock:
            cut = 0
            while cut < len(self._free) and now - self._free[cut].idle_since >= self.idle:
                cut += 1
            old, self._free = self._free[:cut], self._free[cut:]
        for p in old:
            self._close(p)
        self._c.closed_idle += len(old)
        return len(old)

    def close(self) -> None:
        """Close every free pipe (pipes in use are closed by their owners' put/kill)."""
        with self._lock:
            old, self._free = self._free, []
        for p in old:
            self._close(p)

    def add_cache(self, cache: "PipeCache") -> None:
        """Count a per-loop cache's pipes and reuses in this pool's counters."""
        with self._lock:
            self._caches.append(cache)

    def take_back(self, pipes: list[Pipe]) -> None:
        """A cache hands its free pipes down (trim, close): older ones to the bottom."""
        with self._lock:
            self._free[:0] = pipes
            self._free.sort(key=lambda p: p.idle_since)

    def stats(self) -> dict[str, int]:
        d = self.counters.to_dict()
        d.update(cap=self.cap, size=self.size)
        return d


class PipeCache:
    """The per-loop level: a small LIFO in front of the shared pool, touched by one
    thread only, so no lock (its counters are summed by `PipePool.counters`)."""

    def __init__(self, pool: PipePool, limit: int = 64) -> None:
        self.pool = pool
        self.limit = limit
        self.reused = 0
        self._free: list[Pipe] = []
        pool.add_cache(self)

    def get(self) -> Pipe | None:
        if self._free:
            self.reused += 1
            return self._free.pop()
        return self.pool.get()

    def put(self, p: Pipe) -> None:
        if p.fill or len(self._free) >= self.limit:
            self.pool.put(p)
            return
        p.idle_since = self.pool.clock()
        self._free.append(p)

    def kill(self, p: Pipe) -> None:
        self.pool.kill(p)

    def trim(self, now: float | None = None) -> int:
        """Hand the local pipes down to the shared pool, then trim it there."""
        if self._free:
            free, self._free = self._free, []
            self.pool.take_back(free)
        return self.pool.trim(now)

    def close(self) -> None:
        if self._free:
            free, self._free = self._free, []
            self.pool.take_back(free)
        self.pool.close()
