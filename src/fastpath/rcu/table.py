"""SharedTable: a versioned key -> value table in a memfd region, one writer process, reader
processes that look up without a lock or a syscall (QSBR RCU across processes).

Region layout: region.py (header, reader slots, statistics) and layout.py (one version);
every shared word is an aligned u64 accessed through fastpath._atomic.

The writer publishes a new version by copy, update, publish: it takes a free buffer, copies
the current version into it, changes the copy, and swings CURRENT to it with one aligned
release store. The old buffer is retired under a new grace-period token and goes back to
the free list only when every online reader has reported a quiescent state since (grace.py).

Why a reader never sees a torn or half-written entry (the memory-ordering argument):
1. Publication. Every byte of a version is written (plain stores, memcpy) before the
   release store of its offset to CURRENT. A reader loads CURRENT with acquire; if it sees
   the new offset, every write sequenced before the release store is visible to it (the
   release/acquire pair on one word, C11 5.1.2.4). The lookup (rcu/_lookup.c) makes
   that acquire load itself and reads the version after it in program order, and an
   acquire load keeps all later loads after it (on x86 every load has this; on arm64 it is
   LDAR). A version is never written while published, so there is nothing half-written to
   see. The lookup reads each bucket word once (relaxed atomic loads) and checks every
   offset against the version's size, so even a broken writer cannot make it read outside
   the versions area: it raises TornRead.
2. Reclamation. A reader reports a quiescent state by loading TOKEN (acquire) and storing it
   to its slot (release): the release store orders every read it made of older versions
   before the report. The writer unpublishes version V (release store of CURRENT), then
   takes token t with a seq_cst fetch_add. It reuses V's buffer only after loading (acquire)
   qs >= t from every online slot: that report read TOKEN after our fetch_add, so the
   reader's later loads of CURRENT see the new version, and its reads of V all happened
   before the report we acquired. So no read of V overlaps the writer's poison or rewrite.
3. Going online. An offline reader (qs 0) blocks nobody. Going online is the store-buffer
   (Dekker) pattern: the reader stores qs then loads CURRENT; the writer stores CURRENT then
   loads qs. Both sides put a seq_cst fence between the store and the load, so at least one
   sees the other: either the writer sees the reader online (and waits for it), or the
   reader sees the new CURRENT (and never touches V).
4. Words. Every shared word is a naturally aligned u64 accessed by one instruction, so it
   cannot tear; entries themselves are read only under 1-3, so they need no atomicity.
The torture test (torture.py) checks this: it poisons every reclaimed buffer and makes
readers verify a checksum of every entry and that their snapshot stayed intact.

Readers: one slot per reader thread, claimed with cas(tid 0 -> tid). A reader calls
`quiescent()` from its event loop between requests (it must hold no value obtained before
the call... values returned are copies, so only snapshots matter), and `offline()` before
blocking for long (epoll_wait), `online()` after. A dead reader is found by its
(tid, starttime) (liveness.py) and its slot freed; a reader that blocks a grace period for
`stall_after` seconds is reported (log, `stalls` counter, `on_stall`).

Trust: readers map the region writable, because their slots live in it; a reader process
is trusted as far as any process the agent hands the fd to. (A reader killed between
claiming a slot and recording its start time leaves that slot taken but offline: it costs
a slot, never a grace period.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable

from fastpath import naming
from fastpath._atomic import AtomicView, fence
from fastpath.errors import FastpathError, KernelError, UsageError
from fastpath.rcu import layout, liveness
from fastpath.rcu.grace import GracePeriods, Poll, Slot, Stall
from fastpath.rcu.region import (
    H_CREATED_NS,
    H_CURRENT,
    H_DEAD,
    H_ENTRIES,
    H_GP_COUNT,
    H_GP_MAX_NS,
    H_GP_TOTAL_NS,
    H_LAST_STALL_TID,
    H_MAGIC,
    H_NSLOTS,
    H_NVERSIONS,
    H_PENDING,
    H_PUBLISHES,
    H_SLOTS_OFF,
    H_STALL_AFTER_NS,
    H_STALLS,
    H_SYNC_COUNT,
    H_TOKEN,
    H_UPDATED_NS,
    H_VERSION_SIZE,
    H_VERSIONS_OFF,
    H_WRITER_PID,
    HEADER_SIZE,
    REGION_MAGIC,
    S_PID,
    S_QS,
    S_REGISTERED_NS,
    S_START,
    S_TID,
    SLOT_SIZE,
    geometry,
    read_stats,
)
from fastpath.shm.memfd import Region

log = logging.getLogger("fastpath.rcu")

SWEEP_EVERY = 0.25   # seconds between the writer's sweeps for dead readers' slots


class GraceStalled(FastpathError):
    """The writer waited too long for a grace period: a live reader stopped reporting.

    `readers` are the live slots that held the oldest pending grace period up when the
    wait ended, and `waited` how long that grace period had been pending (seconds): what a
    caller that must not block (a node agent) needs to report the stall and decide."""

    def __init__(self, msg: str, *, readers: tuple[Slot, ...] = (), waited: float = 0.0,
                 **kw) -> None:
        super().__init__(msg, **kw)
        self.readers = readers
        self.waited = waited


class Reader:
    """One reader thread's handle: its slot, lookups, quiescent-state reports.

    Use a Reader from the thread that made it (its slot names that thread). `lookup(key)`
    returns the value (a copy, bytes) of `key` in the current version, or None: it is the
    compiled lookup itself (rcu/_lookup.c; one acquire load of CURRENT, then plain reads of
    an immutable version, bounds-checked), bound here with no Python frame around it. Nothing
    read stays referenced after the next quiescent()."""

    __slots__ = ("_table", "_av", "_c", "lookup", "_vsize", "index", "_qs_off", "_tid_off",
                 "closed")

    def __init__(self, table: "SharedTable", index: int) -> None:
        self._table = table
        self._av: AtomicView = table._need()
        self._c = table._c
        self.lookup = table._c.lookup
        self._vsize = table.version_size
        self.index = index
        self._qs_off = table.slots_off + index * SLOT_SIZE + S_QS
        self._tid_off = table.slots_off + index * SLOT_SIZE + S_TID
        self.closed = False

    def get(self, key: bytes, default=None):
        v = self.lookup(key)
        return default if v is None else v

    def snapshot(self) -> "Snapshot":
        """The current version, for several lookups that must agree with each other; valid
        until this reader's next quiescent()."""
        return Snapshot(self._table, self._c.current())

    def quiescent(self) -> None:
        """I hold nothing read before this call (DPDK: rte_rcu_qsbr_quiescent)."""
        self._av.store(self._qs_off, self._av.load(H_TOKEN))

    def online(self) -> None:
        self._av.store(self._qs_off, self._av.load(H_TOKEN))
        fence()  # store qs, then read CURRENT: the Dekker pattern (module docstring, 3)

    def offline(self) -> None:
        """I will read nothing until online(); grace periods need not wait for me."""
        self._av.store(self._qs_off, 0)

    @contextlib.contextmanager
    def idle(self):
        """Offline for the duration (around a blocking wait)."""
        self.offline()
        try:
            yield
        finally:
            self.online()

    @property
    def is_online(self) -> bool:
        return self._av.load(self._qs_off) != 0

    def close(self) -> None:
        """Go offline and free the slot."""
        if self.closed:
            return
        self.closed = True
        if self._table._av is None:
            return
        self._av.store(self._qs_off, 0)
        self._av.store(self._tid_off + (S_START - S_TID), 0)
        self._av.store(self._tid_off, 0)


class Snapshot:
    """One version, as a reader saw it; `intact()` says whether it is still that version
    (always, under RCU; the torture test checks)."""

    __slots__ = ("_buf", "_c", "base", "_vsize", "gen")

    def __init__(self, table: "SharedTable", base: int) -> None:
        self._buf = buf = table._region.buf
        self._c = table._c
        self.base = base
        self._vsize = table.version_size
        self.gen = layout.gen(buf, base) if base else 0
        if base and layout.magic(buf, base) != layout.VERSION_MAGIC:
            raise layout.TornRead(f"CURRENT points at {base}, which holds no version")

    def lookup(self, key: bytes) -> bytes | None:
        return self._c.lookup_at(self.base, key) if self.base else None

    def items(self) -> dict[bytes, bytes]:
        return layout.items(self._buf, self.base, self._vsize) if self.base else {}

    def intact(self) -> bool:
        return not self.base or (layout.magic(self._buf, self.base) == layout.VERSION_MAGIC
                                 and layout.gen(self._buf, self.base) == self.gen)


class SharedTable:
    """A key -> value table (bytes -> bytes) in a memfd region, RCU-protected.

    Writer: `SharedTable.create(...)`, then publish()/update()/delete()/apply(). Readers in
    other processes: `SharedTable.attach(fd)` (fd inherited, or received over a unix socket
    with SCM_RIGHTS), then lookup()/quiescent(); `reader()` gives another thread its own slot.
    """

    def __init__(self, region: Region, *, writer: bool, clock: Callable[[], float] = time.monotonic,
                 stall_after: float | None = None, poison: bool = False,
                 on_stall: Callable[[Stall], None] | None = None) -> None:
        self._region = region
        if region.size < HEADER_SIZE:
            raise UsageError(f"fd {region.fd} ({region.size} bytes) does not hold a fastpath SharedTable")
        self._av: AtomicView | None = AtomicView(region.buf)
        buf = region.buf
        if len(buf) < HEADER_SIZE or self._av.load(H_MAGIC) != REGION_MAGIC:
            self._av.release()
            raise UsageError(f"fd {region.fd} does not hold a fastpath SharedTable")
        self.nslots = self._av.load(H_NSLOTS)
        self.nversions = self._av.load(H_NVERSIONS)
        self.version_size = self._av.load(H_VERSION_SIZE)
        self.slots_off = self._av.load(H_SLOTS_OFF)
        self.versions_off = self._av.load(H_VERSIONS_OFF)
        if self.versions_off + self.nversions * self.version_size > region.size:
            self._av.release()
            raise UsageError(f"fd {region.fd}: SharedTable geometry exceeds the region")
        try:
            self._c = layout.c_lookup(buf, H_CURRENT, self.versions_off, self.nversions,
                                      self.version_size)
        except ValueError as e:
            self._av.release()
            raise UsageError(f"fd {region.fd}: SharedTable geometry: {e}") from e
        # peek(key): a lookup with no RCU protection and no slot, correct only while
        # something else (a lock held against the writer) keeps the version from being
        # reused. It is the readers' compiled lookup itself, so the lock-guarded peers in
        # `fastpath bench rcu` run the very lookup the RCU readers run and measure only the
        # synchronization around it.
        self.peek = self._c.lookup
        self.is_writer = writer
        self.poison = poison
        self.on_stall = on_stall
        self._lock = threading.Lock()   # writer side: one publisher at a time in this process
        self._default: Reader | None = None
        if stall_after is None:
            stall_after = self._av.load(H_STALL_AFTER_NS) / 1e9
        self.grace = GracePeriods(clock, stall_after=stall_after)
        self._data: dict[bytes, bytes] = {}
        self._free: list[int] = []
        self._cur = -1   # index of the published buffer
        self._last_sweep = clock()
        if writer:
            self._free = list(range(self.nversions))[::-1]

    # ---- creation and attachment

    @classmethod
    def create(cls, capacity: int = 1 << 20, *, readers: int = 64, versions: int = 8,
               name: str = "table", stall_after: float = 2.0, poison: bool = False,
               on_stall: Callable[[Stall], None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> "SharedTable":
        """A new table whose versions hold `capacity` bytes each; this process is its writer.

        A caller that wants `fastpath rcu stats` to list it leaves a note (rcu.registry)."""
        if not _ok_part(name):
            raise UsageError(f"table name {name!r}: use lowercase letters, digits and '-'")
        vsize, voff, size = geometry(capacity, readers, versions)
        region = Region.create(size, naming.name("rcu", name), populate=True)
        try:
            av = AtomicView(region.buf)
            try:
                for off, v in ((H_NSLOTS, readers), (H_NVERSIONS, versions),
                               (H_VERSION_SIZE, vsize), (H_SLOTS_OFF, HEADER_SIZE),
                               (H_VERSIONS_OFF, voff), (H_TOKEN, 1),
                               (H_WRITER_PID, os.getpid()), (H_CREATED_NS, time.time_ns()),
                               (H_STALL_AFTER_NS, int(stall_after * 1e9))):
                    av.store(off, v)
                av.store(H_MAGIC, REGION_MAGIC)
            finally:
                av.release()
            region.seal()  # size fixed: a reader's mapping can never SIGBUS
            t = cls(region, writer=True, stall_after=stall_after, poison=poison,
                    on_stall=on_stall, clock=clock)
        except BaseException:
            region.close()
            raise
        try:
            t.publish({})
        except BaseException:
            t.close()
            raise
        return t

    @classmethod
    def attach(cls, fd: int, *, reader: bool = True) -> "SharedTable":
        """Map the table in `fd` (the caller keeps its fd; we map a dup). With `reader`, the
        calling thread registers a slot and goes online.

        The fd may be inherited (fork, pass_fds) or received over a unix socket with
        SCM_RIGHTS (socket.recv_fds, or fastpath.shm's hand-over: send it without
        `readonly`, since readers write their slots, and attach `received.region.fd`). The
        writer sealed the size (F_SEAL_SHRINK|GROW), so this mapping can never SIGBUS."""
        try:
            size = os.fstat(fd).st_size
            own = os.dup(fd)
        except OSError as e:
            raise KernelError.from_oserror(f"attach SharedTable fd {fd}", e) from e
        try:
            region = Region(own, size, writable=True)
        except BaseException:
            os.close(own)
            raise
        try:
            t = cls(region, writer=False)
        except BaseException:
            region.close()
            raise
        if reader:
            try:
                t._default = t.reader()
            except BaseException:
                t.close()
                raise
        return t

    @property
    def fd(self) -> int:
        return self._region.fd

    @property
    def size(self) -> int:
        return self._region.size

    # ---- reader side

    def reader(self) -> Reader:
        """Register the calling thread as a reader: claim a free slot, go online."""
        av = self._need()
        tid, start = liveness.self_starttime()
        for i in range(self.nslots):
            base = self.slots_off + i * SLOT_SIZE
            if av.load(base + S_TID) == 0 and av.cas(base + S_TID, 0, tid):
                av.store(base + S_QS, 0)
                av.store(base + S_PID, os.getpid())
                av.store(base + S_START, start)
                av.store(base + S_REGISTERED_NS, time.time_ns())
                r = Reader(self, i)
                r.online()
                return r
        raise FastpathError(f"all {self.nslots} reader slots are taken",
                            op="register SharedTable reader",
                            hint="create the table with more readers")

    def _reader(self) -> Reader:
        if self._default is None:
            self._default = self.reader()
        return self._default

    def thread_reader(self) -> Reader:
        """The Reader that lookup() and quiescent() on this table use (made on first use),
        for callers that drive it directly: offline while idle, lookups bound once."""
        return self._reader()

    def lookup(self, key: bytes) -> bytes | None:
        if self.is_writer:   # the writer reads its own table; it reclaims nothing under itself
            self._need()
            return self._c.lookup(key)
        return self._reader().lookup(key)

    def get(self, key: bytes, default=None):
        v = self.lookup(key)
        return default if v is None else v

    def quiescent(self) -> None:
        if not self.is_writer:
            self._reader().quiescent()

    def online(self) -> None:
        if not self.is_writer:
            self._reader().online()

    def offline(self) -> None:
        if not self.is_writer:
            self._reader().offline()

    def snapshot(self) -> Snapshot:
        if self.is_writer:
            return Snapshot(self, self._need().load(H_CURRENT))
        return self._reader().snapshot()

    # ---- writer side

    def items(self) -> dict[bytes, bytes]:
        return self.snapshot().items() if not self.is_writer else dict(self._data)

    def __len__(self) -> int:
        return self._need().load(H_ENTRIES) if not self.is_writer else len(self._data)

    def publish(self, items: dict[bytes, bytes], *, timeout: float = 5.0) -> None:
        """Replace the whole table with `items`."""
        for k, v in items.items():
            layout.check_item(k, v)
        items = dict(items)
        self._write(lambda base: layout.build(self._region.buf, base, self.version_size,
                                              items, self._publishes() + 1),
                    lambda: items, timeout)

    def update(self, key: bytes, value: bytes, *, timeout: float = 5.0) -> None:
        self.apply({key: value}, (), timeout=timeout)

    def delete(self, key: bytes, *, timeout: float = 5.0) -> None:
        self.apply({}, (key,), timeout=timeout)

    def apply(self, puts: dict[bytes, bytes], deletes: Iterable[bytes] = (), *,
              timeout: float = 5.0) -> None:
        """One new version with `deletes` removed and `puts` set (copy, update, publish)."""
        deletes = [k for k in deletes]
        for k, v in puts.items():
            layout.check_item(k, v)
        data = dict(self._data)
        for k in deletes:
            data.pop(k, None)
        data.update(puts)
        buf = self._region.buf
        vsize = self.version_size

        def fill(base: int) -> bool:
            gen = self._publishes() + 1
            if self._cur >= 0:
                layout.copy(buf, self._offset(self._cur), base)
                if layout.apply(buf, base, vsize, puts, deletes, gen):
                    return True
            layout.build(buf, base, vsize, data, gen)   # out of room in place: rebuild
            return True

        self._write(fill, lambda: data, timeout)

    def _write(self, fill: Callable[[int], object], result: Callable[[], dict], timeout: float) -> None:
        if not self.is_writer:
            raise UsageError("this SharedTable was attached as a reader; only its creator writes")
        av = self._need()
        with self._lock:
            idx = self._take_buffer(timeout)
            base = self._offset(idx)
            try:
                fill(base)
            except BaseException:
                self._free.append(idx)   # never published: still private
                raise
            self._data = result()
            av.store(H_ENTRIES, len(self._data))
            old = self._cur
            av.store(H_CURRENT, base)            # publish: release store of one aligned word
            av.fetch_add(H_PUBLISHES, 1)
            self._cur = idx
            if old >= 0:
                self.grace.retire(old, self._new_token())
            if not self._reclaim():
                self._write_stats()   # pending changed even if nothing came back

    def _publishes(self) -> int:
        return self._need().load(H_PUBLISHES)

    def _offset(self, idx: int) -> int:
        return self.versions_off + idx * self.version_size

    def _new_token(self) -> int:
        t = self._need().fetch_add(H_TOKEN, 1) + 1
        fence()   # store CURRENT, then read the slots: the Dekker pattern (docstring, 3)
        return t

    def _take_buffer(self, timeout: float) -> int:
        if not self._free:
            self._wait(lambda: bool(self._free), timeout, "a free version buffer")
        return self._free.pop()

    def _wait(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Poll grace periods until done(); back off from 20 us to 1 ms between polls."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 20e-6
        while True:
            self._reclaim()
            if done():
                return
            if deadline is not None and time.monotonic() >= deadline:
                readers = tuple(self._last_poll.blocking)
                blocking = [f"pid {s.pid} tid {s.tid}" for s in readers]
                waited = self.grace.oldest_age()
                raise GraceStalled(f"no grace period in {waited:.1f}s waiting for {what}; "
                                   f"blocked by {', '.join(blocking) or 'nobody'}",
                                   op="SharedTable grace period", readers=readers, waited=waited,
                                   hint="a reader stopped calling quiescent() while online")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    _last_poll = Poll()

    def slots(self) -> list[Slot]:
        """Every claimed reader slot but the calling thread's own: a thread that waits for a
        grace period is in a quiescent state itself (as in liburcu-qsbr's synchronize_rcu)."""
        av = self._need()
        me = threading.get_native_id()
        out = []
        for i in range(self.nslots):
            base = self.slots_off + i * SLOT_SIZE
            qs = av.load(base + S_QS)         # first: acquire orders the fields after it
            tid = av.load(base + S_TID)
            if tid and tid != me:
                out.append(Slot(i, qs, tid, av.load(base + S_PID), av.load(base + S_START)))
        return out

    def reclaim(self) -> int:
        """Poll grace periods once; returns how many versions came back."""
        with self._lock:
            return self._reclaim()

    def _free_slot(self, s: Slot) -> None:
        """Free a dead reader's slot. Only the writer frees slots and readers claim only free
        ones (tid 0), so the slot is still the dead reader's between these two stores."""
        av = self._need()
        base = self.slots_off + s.index * SLOT_SIZE
        av.store(base + S_QS, 0)
        av.store(base + S_START, 0)
        av.store(base + S_TID, 0)
        log.info("SharedTable reader pid %d tid %d died; slot %d freed", s.pid, s.tid, s.index)

    def sweep(self) -> int:
        """Free the slots of dead readers, online or not (grace periods free the online ones
        that block them anyway; this frees the offline ones before the slots run out)."""
        n = 0
        for s in self.slots():
            if not _alive(s):
                self._free_slot(s)
                n += 1
        if n:
            self.grace.dead_readers += n
            self._write_stats()
        return n

    def _reclaim(self) -> int:
        now = self.grace.clock()
        if now - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = now
            self.sweep()
        if not self.grace.pending:
            return 0
        p = self.grace.poll(self.slots(), _alive)
        self._last_poll = p
        for s in p.dead:
            self._free_slot(s)
        for st in p.stalled:
            self._need().store(H_LAST_STALL_TID, st.slot.tid)
            log.warning("SharedTable reader pid %d tid %d stalled: no quiescent state for %.3fs",
                        st.slot.pid, st.slot.tid, st.waited)
            if self.on_stall:
                self.on_stall(st)
        n = 0
        for item in p.reclaimable:
            if item is None:
                continue   # a synchronize() marker
            if self.poison:
                layout.poison(self._region.buf, self._offset(item), self.version_size)
            self._free.append(item)
            n += 1
        if p.reclaimable or p.dead or p.stalled:
            self._write_stats()
        return n

    def synchronize(self, timeout: float | None = None) -> float:
        """Wait for a full grace period; returns how long it took (seconds)."""
        if not self.is_writer:
            raise UsageError("synchronize() is for the writer of a SharedTable")
        with self._lock:
            t0 = self.grace.clock()
            token = self._new_token()
            self.grace.retire(None, token)   # None: a marker, nothing to free
            self._need().fetch_add(H_SYNC_COUNT, 1)
            self._wait(lambda: self.grace.oldest_token is None or self.grace.oldest_token > token,
                       timeout, "synchronize()")
            return self.grace.clock() - t0

    def _write_stats(self) -> None:
        av = self._need()
        g = self.grace
        av.store(H_GP_COUNT, g.completed)
        av.store(H_GP_TOTAL_NS, int(g.total_latency * 1e9))
        av.store(H_GP_MAX_NS, int(g.max_latency * 1e9))
        av.store(H_PENDING, g.pending)
        av.store(H_STALLS, g.stalls)
        av.store(H_DEAD, g.dead_readers)
        av.store(H_UPDATED_NS, time.time_ns())

    # ---- statistics

    def stats(self) -> dict:
        self._need()
        return read_stats(self._region.buf)

    # ---- teardown

    def _need(self) -> AtomicView:
        if self._av is None:
            raise UsageError("SharedTable is closed")
        return self._av

    def close(self) -> None:
        """Free this process's reader slot (if any), unmap, close the fd."""
        if self._av is None:
            return
        if self._default is not None:
            self._default.close()
        self._c.release()   # both hold buffer exports: the mapping cannot close under them
        self._av.release()
        self._av = None
        self._region.close()

    def __enter__(self) -> "SharedTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _alive(s: Slot) -> bool:
    """Start time 0: a reader between claiming the slot and recording who it is (it cannot
    be online yet). Freeing such a slot would leave the registering reader invisible, so
    it counts as alive. Slots are freed with the start time zeroed before the tid."""
    return s.starttime == 0 or liveness.alive(s.tid, s.starttime)


def _ok_part(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name))
