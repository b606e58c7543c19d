"""Is a reader thread still alive? /proc/<tid>/stat, checked against the start time the
reader recorded when it registered.

Kernel facts (proc(5)): /proc/<tid>/stat exists for every thread id, listed or not; field 3
is the state (Z zombie, X dead); field 22 is the start time in clock ticks since boot. A pid
is reused only after the old task is reaped, and the new task has a later start time, so
(tid, starttime) names one thread for the life of the machine. A process killed but not
yet reaped by its parent is a zombie: dead for us, it holds no references. (A pidfd would
need the writer to open one per reader before the reader can die; the start time needs
nothing kept open and covers threads too.)
"""

from __future__ import annotations

import threading

from fastpath.kernel import proc


def starttime(tid: int) -> int | None:
    """Start time of thread `tid` in clock ticks since boot, None when it does not exist."""
    return proc.starttime(tid)


def self_starttime() -> tuple[int, int]:
    """(tid, starttime) of the calling thread."""
    tid = threading.get_native_id()
    st = starttime(tid)
    assert st is not None
    return tid, st


def alive(tid: int, start: int) -> bool:
    """Whether the thread that registered as (tid, start) still runs (not zombie, not reused)."""
    f = proc.stat_fields(tid)
    if f is None or f[0] in ("Z", "X", "x"):
        return False
    return int(f[19]) == start
