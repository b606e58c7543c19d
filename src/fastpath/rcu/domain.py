"""In-process RCU: a Domain with read-side sections, synchronize(), call_rcu(), barrier(),
a protected reference and a read-mostly mapping.

Two reader flavors share one domain (as liburcu's memb and qsbr flavors do):
- Sections: `with domain.read():` marks where a thread may hold references. Each thread has
  a counter word; entering the outermost section and leaving it each add 1 with a seq_cst
  fetch_add, so the word is odd inside a section. synchronize() snapshots every word and
  waits until each odd one has changed: the section that was open has ended (sections that
  started later began after the unpublish and cannot see the old value).
- QSBR: a thread that runs an event loop calls `domain.quiescent()` between requests and
  reads with no per-read cost at all; `offline()` before blocking, `online()` after.
  synchronize() takes a new token and waits until every online QSBR thread has reported
  it (the same model as SharedTable across processes, grace.py).

Ordering, without the GIL: the counters live in an anonymous mapping accessed through
fastpath._atomic. A reader's fetch_add (seq_cst) comes before its loads of protected
references; the updater stores the new reference, then a seq_cst fence, then loads the
counters. That is the store-buffer pattern with a full barrier on both sides, so either the
updater sees the reader inside (and waits) or the reader sees the new reference. Leaving
is a seq_cst RMW too, so the reader's loads are done before the updater sees the change.
Every shared Python structure (slot lists, the callback queue) is touched under a lock.
"""

from __future__ import annotations

import logging
import mmap
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from fastpath._atomic import AtomicView, fence
from fastpath.errors import FastpathError, UsageError
from fastpath.shm.memfd import PAGE_SIZE, Region

log = logging.getLogger("fastpath.rcu")

_GP = 0          # the QSBR token word
DOMAIN_MAGIC = int.from_bytes(b"FPRCUDOM", "little")
_WORD = 8
MAX_THREADS = 4096


class _Section:
    """One thread's read-side section counter; it is its own context manager, so that
    `with domain.read():` costs one thread-local lookup and, outermost, two atomic adds."""

    __slots__ = ("_add", "off", "nest", "release", "__weakref__")
    release: weakref.finalize  # returns the slot when the thread-local dies

    def __init__(self, av: AtomicView, off: int) -> None:
        self._add = av.fetch_add
        self.off = off
        self.nest = 0

    def __enter__(self) -> "_Section":
        n = self.nest
        self.nest = n + 1
        if not n:
            self._add(self.off, 1)   # odd: inside; seq_cst orders the loads after it
        return self

    def __exit__(self, *exc) -> None:
        n = self.nest - 1
        self.nest = n
        if not n:
            self._add(self.off, 1)   # even: outside; the loads before it are done


class _Qsbr:
    __slots__ = ("off", "release", "__weakref__")
    release: weakref.finalize

    def __init__(self, off: int) -> None:
        self.off = off


class Domain:
    """An RCU domain for one process. Thread-safe; valid with or without the GIL."""

    def __init__(self, name: str = "rcu", max_threads: int = MAX_THREADS, *,
                 export_stats: bool = False) -> None:
        """`export_stats`: keep statistics in a one-page memfd (`stats_fd`) that other
        processes can map; a caller that wants `fastpath rcu stats` to list the domain
        leaves a note (rcu.registry). Otherwise stats() is the only view."""
        self.name = name
        self._map = mmap.mmap(-1, _WORD * (max_threads + 1))
        self._av = AtomicView(self._map)
        self._av.store(_GP, 1)
        self._lock = threading.Lock()             # slot allocation, lists below
        self._free = list(range(max_threads, 0, -1))
        self._sections: dict[int, None] = {}      # offsets of section counters
        self._qsbr: dict[int, None] = {}          # offsets of QSBR words
        self._local = threading.local()
        self._sync_lock = threading.Lock()
        # grace-period statistics
        self.grace_periods = 0
        self._gp_total = 0.0
        self._gp_max = 0.0
        # call_rcu
        self._cb_cond = threading.Condition(threading.Lock())
        self._callbacks: list[tuple[Callable, tuple]] = []
        self._queued = 0
        self._done = 0
        self._cb_errors = 0
        self._worker: threading.Thread | None = None
        self._closing = False
        self._stats_region: Region | None = None
        self._stats_av: AtomicView | None = None
        if export_stats:
            self._publish_stats_region()

    # ---- statistics other processes can read

    def _publish_stats_region(self) -> None:

        self._stats_region = Region.create(PAGE_SIZE, "fp-rcu-domain")
        self._stats_av = AtomicView(self._stats_region.buf)
        self._stats_av.store(0, DOMAIN_MAGIC)
        self._export()

    @property
    def stats_fd(self) -> int:
        """The memfd holding this domain's statistics (export_stats=True), for a
        registry note; -1 without one."""
        return self._stats_region.fd if self._stats_region is not None else -1

    def _export(self) -> None:
        av = self._stats_av
        if av is None:
            return
        for i, v in enumerate((self.grace_periods, int(self._gp_total * 1e9),
                               int(self._gp_max * 1e9), self._queued, self._done,
                               self._cb_errors, len(self._sections), len(self._qsbr)), start=1):
            av.store(8 * i, v)

    # ---- registration

    def _alloc(self, kind: dict) -> int:
        with self._lock:
            if not self._free:
                n = len(self._sections) + len(self._qsbr)
                raise FastpathError(f"RCU domain {self.name}: more than {n} reader threads")
            off = self._free.pop() * _WORD
            self._av.store(off, 0)
            kind[off] = None
            self._export()
            return off

    def _release(self, kind: dict, off: int) -> None:
        with self._lock:
            del kind[off]
            self._av.store(off, 0)
            self._free.append(off // _WORD)
            self._export()

    def read(self) -> _Section:
        """The calling thread's read-side section: `with domain.read(): ...`."""
        try:
            return self._local.section
        except AttributeError:
            s = _Section(self._av, self._alloc(self._sections))
            # The thread-local dies with the thread; the slot goes back then.
            s.release = weakref.finalize(s, self._release, self._sections, s.off)
            self._local.section = s
            return s

    def _qsbr_slot(self) -> _Qsbr:
        try:
            return self._local.qsbr
        except AttributeError:
            q = _Qsbr(self._alloc(self._qsbr))
            q.release = weakref.finalize(q, self._release, self._qsbr, q.off)
            self._local.qsbr = q
            return q

    def online(self) -> None:
        """Register the calling thread as a QSBR reader (or bring it back online)."""
        off = self._qsbr_slot().off
        self._av.store(off, self._av.load(_GP))
        fence()   # store our token, then read references: the Dekker pattern

    def quiescent(self) -> None:
        """The calling QSBR thread holds no reference read before this call."""
        q = self._local.__dict__.get("qsbr")
        if q is None:
            raise UsageError("quiescent() from a thread that never called online()")
        self._av.store(q.off, self._av.load(_GP))

    def offline(self) -> None:
        q = self._local.__dict__.get("qsbr")
        if q is not None:
            self._av.store(q.off, 0)

    def unregister(self) -> None:
        """Forget the calling thread's slots now (they also go when the thread ends)."""
        if self._in_section():
            raise UsageError("unregister() inside a read-side section")
        for attr in ("section", "qsbr"):
            obj = self._local.__dict__.pop(attr, None)
            if obj is not None:
                obj.release()   # a finalize runs once: the thread's end will not free it again

    # ---- grace periods

    def _in_section(self) -> bool:
        s = self._local.__dict__.get("section")
        return bool(s is not None and s.nest)

    def synchronize(self) -> float:
        """Wait until every reader that might hold a reference published before this call
        has let go; returns the grace period's length in seconds."""
        if self._in_section():
            raise UsageError("synchronize() inside a read-side section would wait for itself")
        t0 = time.monotonic()
        me_q = self._local.__dict__.get("qsbr")
        with self._sync_lock:
            token = self._av.fetch_add(_GP, 1) + 1
            fence()
            with self._lock:
                sections = list(self._sections)
                qsbr = [o for o in self._qsbr if me_q is None or o != me_q.off]
            av = self._av
            waiting = [(o, v) for o in sections if (v := av.load(o)) & 1]
            pause = 0.0
            while True:
                waiting = [(o, v) for o, v in waiting if av.load(o) == v]
                qsbr = [o for o in qsbr if (q := av.load(o)) and q < token]
                if not waiting and not qsbr:
                    break
                time.sleep(pause)          # 0 first: just yield the CPU
                pause = min(max(pause * 2, 10e-6), 1e-3)
            dt = time.monotonic() - t0
            self.grace_periods += 1
            self._gp_total += dt
            self._gp_max = max(self._gp_max, dt)
            self._export()
        return dt

    # ---- deferred callbacks

    def call_rcu(self, callback: Callable, *args: Any) -> None:
        """Run callback(*args) on the domain's worker thread after a grace period."""
        with self._cb_cond:
            if self._closing:
                raise UsageError(f"RCU domain {self.name} is closed")
            self._callbacks.append((callback, args))
            self._queued += 1
            self._export()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"fp-rcu-{self.name}",
                                                daemon=True)
                self._worker.start()
            self._cb_cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cb_cond:
                while not self._callbacks and not self._closing:
                    self._cb_cond.wait()
                if not self._callbacks and self._closing:
                    return
                batch, self._callbacks = self._callbacks, []
            self.synchronize()   # one grace period covers the whole batch
            for cb, args in batch:
                try:
                    cb(*args)
                except Exception:
                    self._cb_errors += 1
                    log.exception("RCU callback %r failed", cb)
            with self._cb_cond:
                self._done += len(batch)
                self._cb_cond.notify_all()
                self._export()

    def barrier(self, timeout: float | None = None) -> None:
        """Wait until every callback queued before this call has run."""
        if self._in_section():
            raise UsageError("barrier() inside a read-side section would wait for itself")
        with self._cb_cond:
            target = self._queued
            if not self._cb_cond.wait_for(lambda: self._done >= target, timeout):
                raise FastpathError(f"RCU domain {self.name}: callbacks still pending after {timeout}s")

    @property
    def pending_callbacks(self) -> int:
        with self._cb_cond:
            return self._queued - self._done

    def stats(self) -> dict:
        with self._lock:
            sections, qsbr = len(self._sections), len(self._qsbr)
        n = self.grace_periods
        return {"domain": self.name, "grace_periods": n,
                "gp_mean_ms": self._gp_total / n * 1e3 if n else 0.0,
                "gp_max_ms": self._gp_max * 1e3, "pending_callbacks": self.pending_callbacks,
                "callbacks_run": self._done, "callback_errors": self._cb_errors,
                "readers": sections + qsbr, "section_readers": sections, "qsbr_readers": qsbr}

    def close(self) -> None:
        """Run the pending callbacks, stop the worker."""
        with self._cb_cond:
            self._closing = True
            self._cb_cond.notify_all()
            w = self._worker
        if w is not None and w is not threading.current_thread():
            w.join()
        if self._stats_av is not None:
            self._stats_av.release()
            self._stats_av = None
        if self._stats_region is not None:
            self._stats_region.close()

    def __enter__(self) -> "Domain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Protected:
    """An RCU-protected reference (rcu_assign_pointer / rcu_dereference).

    Readers call get(), or read `.value` (a plain slot read, the cheapest there is), inside a
    read-side section (or between quiescent states) and may use what they got until the
    section ends. The updater assign()s a new object; replace()
    also hands the old one to `retire` after a grace period (close an fd, free shm space).
    Updates to one reference must be serialized by the caller (or use RcuMap)."""

    __slots__ = ("value", "domain")

    def __init__(self, domain: Domain, value: Any = None) -> None:
        self.domain = domain
        self.value = value

    def get(self) -> Any:
        return self.value

    dereference = get

    def assign(self, value: Any) -> None:
        # A Python attribute store publishes a fully built object (the runtime guarantees
        # it, with or without the GIL); readers see the old or the new object, never a mix.
        self.value = value

    def replace(self, value: Any, retire: Callable[[Any], Any] | None = None) -> Any:
        old, self.value = self.value, value
        if retire is not None and old is not None:
            self.domain.call_rcu(retire, old)
        return old


class RcuMap(Mapping):
    """A read-mostly mapping: reads take no lock and see one consistent version; writes
    copy, update and publish under a lock, and hand displaced values to `on_retire` after
    a grace period."""

    def __init__(self, domain: Domain, initial: Mapping | None = None,
                 on_retire: Callable[[Any], Any] | None = None) -> None:
        self.domain = domain
        self.on_retire = on_retire
        self._ref = Protected(domain, MappingProxyType(dict(initial or {})))
        self._wlock = threading.Lock()

    # reads
    def snapshot(self) -> Mapping:
        """The current version: several reads that must agree, inside one section."""
        return self._ref.value

    def __getitem__(self, key):
        return self._ref.value[key]

    def get(self, key, default=None):
        return self._ref.value.get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._ref.value

    def __iter__(self) -> Iterator:
        return iter(self._ref.value)

    def __len__(self) -> int:
        return len(self._ref.value)

    # writes
    def _publish(self, change: Callable[[dict], list]) -> None:
        with self._wlock:
            new = dict(self._ref.value)
            displaced = change(new)
            self._ref.assign(MappingProxyType(new))
        if self.on_retire is not None:
            for v in displaced:
                self.domain.call_rcu(self.on_retire, v)

    def set(self, key, value) -> None:
        def change(d):
            old = d.get(key, _MISSING)
            d[key] = value
            return [] if old is _MISSING or old is value else [old]
        self._publish(change)

    __setitem__ = set

    def delete(self, key) -> None:
        def change(d):
            if key not in d:
                raise KeyError(key)
            return [d.pop(key)]
        self._publish(change)

    __delitem__ = delete

    def update_many(self, puts: Mapping = MappingProxyType({}), deletes=()) -> None:
        def change(d):
            out = [d.pop(k) for k in deletes if k in d]
            for k, v in dict(puts).items():
                old = d.get(k, _MISSING)
                d[k] = v
                if old is not _MISSING and old is not v:
                    out.append(old)
            return out
        self._publish(change)

    def replace_all(self, mapping: Mapping) -> None:
        def change(d):
            out = [v for k, v in d.items() if mapping.get(k, _MISSING) is not v]
            d.clear()
            d.update(mapping)
            return out
        self._publish(change)


_MISSING = object()


def read_domain_stats(buf) -> dict:
    """A registered Domain's counters from its stats page (read-only mapping is enough)."""
    w = [struct.unpack_from("<Q", buf, 8 * i)[0] for i in range(9)]
    if w[0] != DOMAIN_MAGIC:
        raise UsageError("not a fastpath RCU domain statistics page")
    gp, total, mx, queued, done, errors, sections, qsbr = w[1:]
    return {"kind": "domain", "grace_periods": gp, "gp_mean_ms": total / gp / 1e6 if gp else 0.0,
            "gp_max_ms": mx / 1e6, "pending_callbacks": queued - done, "callbacks_run": done,
            "callback_errors": errors, "readers": sections + qsbr, "section_readers": sections,
            "qsbr_readers": qsbr}
