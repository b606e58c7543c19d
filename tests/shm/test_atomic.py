import mmap
import multiprocessing as mp
import os
import time

import pytest

from fastpath._atomic import AtomicView, fence
from fastpath.shm.memfd import Region


def test_load_store_rmw():
    with Region.create(4096) as r:
        with AtomicView(r.buf) as a:
            a.store(8, 41)
            assert a.load(8) == 41
            assert a.fetch_add(8, 1) == 41 and a.load(8) == 42
            assert a.exchange(8, 7) == 42
            assert a.cas(8, 7, 9) and not a.cas(8, 7, 10) and a.load(8) == 9
            a.store(0, 2**64 - 1)
            assert a.load(0) == 2**64 - 1
            assert a.nbytes == 4096
            fence()


@pytest.mark.parametrize("off", [-8, 3, 4096, 4090])
def test_bad_offsets_refused(off):
    with Region.create(4096) as r, AtomicView(r.buf) as a:
        with pytest.raises(IndexError):
            a.load(off)


def test_readonly_and_released_views_refused():
    with pytest.raises(BufferError):
        AtomicView(b"\0" * 16)
    with Region.create(4096) as r:
        a = AtomicView(r.buf)
        a.release()
        with pytest.raises(ValueError):
            a.load(0)


def _add(fd: int, n: int) -> None:
    r = Region(fd, 4096)
    a = AtomicView(r.buf)
    for _ in range(n):
        a.fetch_add(0, 1)
    a.release()


def test_fetch_add_is_atomic_across_processes():
    with Region.create(4096) as r:
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_add, args=(r.fd, 20000)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        with AtomicView(r.buf) as a:
            assert a.load(0) == 60000


def test_wait_change_returns_on_a_change_from_another_process_and_times_out():
    m = mmap.mmap(-1, 4096)
    a = AtomicView(m)
    a.store(64, 7)
    t0 = time.monotonic()
    assert a.wait_change(64, 7, 20_000_000) == 7          # no change: back after ~20 ms
    assert 0.015 < time.monotonic() - t0 < 1.0
    assert a.wait_change(64, 6, 10**9) == 7                # already different: at once
    pid = os.fork()
    if pid == 0:
        time.sleep(0.05)
        AtomicView(m).store(64, 8)
        os._exit(0)
    try:
        assert a.wait_change(64, 7, 5 * 10**9) == 8        # the child's store ends the spin
    finally:
        os.waitpid(pid, 0)
    with pytest.raises(IndexError):
        a.wait_change(4096, 0, 1)
    a.release()
    with pytest.raises(ValueError):
        a.wait_change(64, 0, 1)
