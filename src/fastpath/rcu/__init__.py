"""fastpath.rcu: read-copy-update for the tables every packet path reads.

Readers never wait for a writer; a writer never frees what a reader may still use. Readers
look up at almost no cost; writers copy, update, publish, and reclaim the old version only
after a grace period in which every reader has passed a quiescent state.

Two halves:

- In-process (`domain.py`): `Domain` with `with domain.read():` sections, `synchronize()`,
  `call_rcu(cb, *args)` (callbacks run on the domain's worker thread after a grace
  period), `barrier()`; `Protected` (assign / get, replace with a retire callback) and
  `RcuMap` (a read-mostly mapping that retires displaced values). Threads that run an event
  loop may use the QSBR flavor instead: `domain.online()`, `domain.quiescent()` between
  requests, `domain.offline()` before blocking; their reads cost nothing at all.
- Across processes (`table.py`): `SharedTable`, a versioned bytes -> bytes table in a memfd
  region (fastpath.shm). One writer process (`SharedTable.create`, then publish / update /
  delete / apply); readers in other processes (`SharedTable.attach(fd)`, then lookup /
  quiescent / offline / online) look up with no lock and no syscall. The grace-period
  bookkeeping is pure (`grace.py`), the version layout is pure (`layout.py`), liveness of
  readers is a /proc check (`liveness.py`), and `fastpath rcu stats` finds tables through a
  note in the state dir (`registry.py`). `torture.py` is rcutorture for both.

What the GIL gives and what it does not, and why we do not rely on it:

- With the GIL (CPython <= 3.12, and 3.13+ by default), one bytecode runs at a time in a
  process, so a Python attribute store is never seen half-done by another thread, and the
  GIL's hand-over orders memory between threads. It gives nothing across processes (each
  has its own GIL), nothing about when a reader thread is preempted (a thread can be
  switched out in the middle of a read section for milliseconds, holding references), and
  nothing about ordering with memory the interpreter does not own (a shared mapping).
- Free-threaded CPython (3.13t, PEP 703) runs bytecodes of many threads at once. Object
  reads and stores stay safe (the runtime makes them so), but "read a flag, then the
  pointer" between two threads no longer has an order unless we make one.

So every ordering that RCU depends on is explicit here: reader state is per thread (one
counter word per thread, never shared), kept in memory read and written only through
fastpath._atomic (acquire loads, release stores, seq_cst read-modify-writes and fences), and
each grace-period decision is argued in terms of those orders, not of the GIL (see
domain.py and table.py). Python-level lists and dicts that several threads touch are
guarded by locks. The design holds on a free-threaded build; it is tested on the GIL build.
"""
import importlib

__all__ = ["Domain", "Protected", "RcuMap", "SharedTable", "Reader", "GraceStalled"]

_WHERE = {"Domain": "domain", "Protected": "domain", "RcuMap": "domain",
          "SharedTable": "table", "Reader": "table", "GraceStalled": "table"}


def __getattr__(name: str):
    # Lazy, so that `fastpath.rcu.commands` (imported by every CLI start) stays light.
    if name in _WHERE:
        return getattr(importlib.import_module(f"fastpath.rcu.{_WHERE[name]}"), name)
    raise AttributeError(name)
