import errno
import fcntl
import os
import threading

from fastpath.proxy.pipepool import PipeCache, PipePool
from tests.proxy.fakes import FakeOps


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def pool(**kw):
    ops = FakeOps()
    clock = Clock()
    kw.setdefault("size", 1 << 20)
    return PipePool(ops=ops, clock=clock, **kw), ops, clock


def test_get_creates_then_put_reuses():
    p, ops, _ = pool()
    a = p.get()
    assert p.counters.created == 1 and p.counters.in_use == 1
    p.put(a)
    assert p.counters.free == 1 and p.counters.in_use == 0
    b = p.get()
    assert b is a and p.counters.reused == 1 and p.counters.created == 1
    assert ops.calls["pipe"] == 1


def test_pipe_size_is_set_and_refusal_tolerated():
    p, ops, _ = pool(size=1 << 20)
    assert p.get().size == 1 << 20
    ops.setsize_fail = errno.EPERM
    q = p.get()
    assert q is not None and q.size == 65536
    assert p.counters.resize_failed == 1


def test_cap_bounds_pipes_in_existence():
    p, ops, _ = pool(cap=2)
    a, b = p.get(), p.get()
    assert p.get() is None
    assert p.counters.failed == 1
    p.put(a)
    assert p.get() is a  # a free one still counts against the cap, and is reused
    p.put(b)
    assert p.counters.in_use + p.counters.free == 2


def test_kernel_refusal_returns_none_and_releases_the_slot():
    p, ops, _ = pool(cap=1)
    ops.pipe_fail = errno.EMFILE
    assert p.get() is None
    assert p.counters.in_use == 0 and p.counters.failed == 1
    ops.pipe_fail = None
    assert p.get() is not None


def test_dirty_pipe_is_closed_never_pooled():
    p, ops, _ = pool()
    a = p.get()
    r, w = a.r, a.w
    a.fill = 10
    p.put(a)
    assert a.closed and {r, w} <= set(ops.closed)
    c = p.counters
    assert (c.closed, c.closed_dirty, c.free, c.in_use) == (1, 1, 0, 0)
    assert p.get() is not a


def test_kill_closes():
    p, ops, _ = pool()
    a = p.get()
    p.kill(a)
    assert a.closed and p.counters.closed == 1 and p.counters.in_use == 0


def test_idle_pipes_are_trimmed_oldest_first():
    p, ops, clock = pool(idle=30)
    a, b = p.get(), p.get()
    p.put(a)
    clock.t += 20
    p.put(b)
    clock.t += 15     # a idle 35 s, b idle 15 s
    assert p.trim() == 1
    assert a.closed and not b.closed
    assert p.counters.closed_idle == 1 and p.counters.free == 1
    assert p.get() is b


def test_idle_zero_never_trims():
    p, _, clock = pool(idle=0)
    p.put(p.get())
    clock.t += 1e6
    assert p.trim() == 0 and p.counters.free == 1


def test_cache_in_front_of_pool_keeps_accounting():
    p, ops, clock = pool(idle=5)
    c = PipeCache(p, limit=2)
    pipes = [c.get() for _ in range(4)]
    for x in pipes:
        c.put(x)
    # two in the cache, two spilled to the shared pool: all free
    assert p.counters.free == 4 and p.counters.in_use == 0
    y = c.get()
    assert y is pipes[1]          # LIFO: the warmest cached pipe
    assert p.counters.reused == 1 and p.counters.free == 3
    c.put(y)
    clock.t += 10
    assert c.trim() == 4          # cache handed down, then trimmed
    assert p.counters.free == 0 and p.counters.closed == 4
    assert not any(fd in ops.fds for x in pipes for fd in (x.r, x.w))


def test_close_closes_every_free_pipe():
    p, ops, _ = pool()
    c = PipeCache(p)
    held = c.get()
    c.put(c.get())
    c.close()
    assert p.counters.free == 0
    c.put(held)
    c.close()
    assert len(ops.fds) == 0


def test_shared_pool_under_threads_keeps_counts():
    p, _, _ = pool(cap=64)

    def work():
        for _ in range(2000):
            x = p.get()
            if x is not None:
                p.put(x)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    c = p.counters
    assert c.in_use == 0 and c.free == c.created - c.closed
    assert c.created <= 64


def test_real_pipes_close_and_set_size():
    p = PipePool(size=1 << 17, cap=4, idle=1)
    fds_before = len(os.listdir("/proc/self/fd"))
    a = p.get()
    # root may grow a pipe up to /proc/sys/fs/pipe-max-size (1 MiB by default)
    assert a.size == 1 << 17 and fcntl.fcntl(a.w, fcntl.F_GETPIPE_SZ) == 1 << 17
    os.write(a.w, b"x")
    a.fill = 1
    p.put(a)              # dirty: closed
    b = p.get()
    p.put(b)
    p.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert p.counters.closed == 2 and p.counters.closed_dirty == 1
