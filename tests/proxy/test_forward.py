"""The forwarding state machine against in-memory sockets and pipes (tests/proxy/fakes)."""

import errno
import random

import pytest

from fastpath.proxy import forward
from fastpath.proxy.forward import Direction
from fastpath.proxy.pipepool import PipeCache, PipePool
from tests.proxy.fakes import FakeOps


def setup(mode="splice", room=1 << 30, splice_min=4096, cap=16):
    ops = FakeOps()
    pool = PipePool(size=65536, cap=cap, idle=0, ops=ops)
    src, dst = ops.sock(), ops.sock(room=room)
    d = Direction(src, dst, ops, PipeCache(pool), mode, splice_min)
    return d, ops, pool, ops.fds[src], ops.fds[dst]


def run_until_wait(d):
    while True:
        r = d.pump()
        if r != forward.YIELD:
            return r


@pytest.mark.parametrize("mode", ["splice", "copy", "auto"])
def test_bytes_arrive_once_in_order_then_half_close(mode):
    d, ops, pool, src, dst = setup(mode)
    data = bytes(random.Random(1).randbytes(300_000))
    src.rx += data[:100_000]
    assert run_until_wait(d) == forward.WANT_READ
    src.rx += data[100_000:]
    src.eof = True
    assert run_until_wait(d) == forward.DONE
    assert dst.tx == data and dst.shut_wr
    assert pool.counters.in_use == 0      # the pipe went back
    assert d.bytes == len(data)


def test_splice_mode_splices_and_idle_direction_holds_no_pipe():
    d, ops, pool, src, dst = setup("splice")
    src.rx += b"x" * 10_000
    assert run_until_wait(d) == forward.WANT_READ
    assert d.spliced == 10_000 and d.copied == 0
    assert d.pipe is None and pool.counters.free == 1
    src.rx += b"y" * 10
    run_until_wait(d)
    assert pool.counters.reused == 1 and pool.counters.created == 1


def test_eagain_with_full_pipe_means_dst_blocked_and_no_read_happens():
    d, ops, pool, src, dst = setup("splice", room=1000)
    src.rx += b"a" * 50_000
    assert run_until_wait(d) == forward.WANT_WRITE
    assert len(dst.tx) == 1000
    # the pipe holds what dst could not take; no further read was attempted
    assert d.pipe.fill == 49_000 and len(src.rx) == 0
    dst.room = 1 << 30
    src.eof = True
    assert run_until_wait(d) == forward.DONE
    assert bytes(dst.tx) == b"a" * 50_000


def test_half_close_waits_for_the_pipe_to_empty():
    d, ops, pool, src, dst = setup("splice", room=10)
    src.rx += b"0123456789abcdef"
    src.eof = True
    assert run_until_wait(d) == forward.WANT_WRITE
    assert not dst.shut_wr                # bytes still in the pipe: no FIN yet
    dst.room = 100
    assert run_until_wait(d) == forward.DONE
    assert dst.shut_wr and bytes(dst.tx) == b"0123456789abcdef"


def test_copy_bytes_pending_leave_the_shared_buffer():
    shared = bytearray(forward.COPY_BUFSIZE)
    ops = FakeOps()
    pool = PipePool(ops=ops)
    src, dst = ops.sock(), ops.sock(room=5)
    d = Direction(src, dst, ops, PipeCache(pool), "copy", shared_buf=shared)
    ops.fds[src].rx += b"hello world"
    assert run_until_wait(d) == forward.WANT_WRITE
    assert d.buf is not shared and bytes(d.buf[d.start:d.end]) == b" world"
    shared[:] = b"\0" * len(shared)       # another direction reuses the shared buffer
    ops.fds[dst].room = 100
    ops.fds[src].eof = True
    assert run_until_wait(d) == forward.DONE
    assert bytes(ops.fds[dst].tx) == b"hello world" and d.buf is shared


def test_einval_before_any_byte_falls_back_to_copy():
    d, ops, pool, src, dst = setup("splice")
    src.einval = True
    src.rx += b"z" * 5000
    assert run_until_wait(d) == forward.WANT_READ
    assert d.mode == "copy" and d.fallback == "EINVAL"
    assert bytes(dst.tx) == b"z" * 5000 and d.copied == 5000


def test_redirected_socket_is_detected_and_copied():
    d, ops, pool, src, dst = setup("splice")
    src.redirected = True                 # readable, but splice sees nothing
    src.rx += b"r" * 7000
    assert run_until_wait(d) == forward.WANT_READ
    assert d.fallback == "redirected" and bytes(dst.tx) == b"r" * 7000
    assert pool.counters.in_use == 0


def test_race_after_eagain_is_not_taken_for_a_redirect():
    d, ops, pool, src, dst = setup("splice")
    src.rx += b"1" * 100
    run_until_wait(d)                     # has spliced before
    real = ops.splice
    state = {"n": 0}

    def splice_racing(fd_in, fd_out, n):
        # first call: EAGAIN, then bytes "arrive" before the FIONREAD check
        if fd_in == d.src and state["n"] == 0:
            state["n"] = 1
            src.rx += b"2" * 100
            raise BlockingIOError(errno.EAGAIN, "splice")
        return real(fd_in, fd_out, n)

    ops.splice = splice_racing
    assert run_until_wait(d) == forward.WANT_READ
    assert d.mode == "splice" and d.fallback == ""
    assert bytes(dst.tx) == b"1" * 100 + b"2" * 100


def test_auto_starts_copying_and_splices_bulk():
    d, ops, pool, src, dst = setup("auto", splice_min=4096)
    src.rx += b"small"
    run_until_wait(d)
    assert d.copied == 5 and not d.splicing
    src.rx += b"B" * 200_000
    run_until_wait(d)
    assert d.splicing and d.spliced > 100_000
    assert bytes(dst.tx) == b"small" + b"B" * 200_000


def test_no_pipe_available_copies():
    d, ops, pool, src, dst = setup("splice", cap=0)
    src.rx += b"q" * 9000
    assert run_until_wait(d) == forward.WANT_READ
    assert d.copied == 9000 and pool.counters.failed >= 1


def test_src_reset_and_dst_gone():
    d, ops, pool, src, dst = setup("splice")
    src.reset = True
    assert d.pump() == forward.SRC_RESET
    d, ops, pool, src, dst = setup("splice")
    dst.peer_gone = True
    src.rx += b"x" * 100
    assert d.pump() == forward.DST_RESET
    d.release()                           # the pipe still holds the bytes: closed
    assert pool.counters.closed_dirty == 1 and pool.counters.in_use == 0


def test_budget_yields_to_other_connections():
    d, ops, pool, src, dst = setup("splice")
    src.rx += b"k" * (65536 * (forward.BUDGET + 4))
    assert d.pump() == forward.YIELD
    assert run_until_wait(d) == forward.WANT_READ
    assert len(dst.tx) == 65536 * (forward.BUDGET + 4)


def test_random_schedules_never_lose_or_duplicate():
    rnd = random.Random(7)
    for trial in range(40):
        mode = rnd.choice(["splice", "copy", "auto"])
        d, ops, pool, src, dst = setup(mode, room=0)
        data = rnd.randbytes(rnd.randrange(1, 400_000))
        fed = 0
        while True:
            if fed < len(data) and rnd.random() < 0.5:
                k = rnd.randrange(1, 70_000)
                src.rx += data[fed:fed + k]
                fed = min(len(data), fed + k)
                if fed == len(data):
                    src.eof = True
            dst.room += rnd.randrange(0, 90_000)
            r = d.pump()
            assert r in (forward.WANT_READ, forward.WANT_WRITE, forward.YIELD, forward.DONE)
            if r == forward.DONE:
                break
        assert bytes(dst.tx) == data, (trial, mode)
        assert pool.counters.in_use == 0


def test_fin_behind_redirected_bytes_is_not_taken_for_eof():
    # splice sees the FIN in the receive queue while the bytes sent before it wait in
    # the psock queue: the direction must copy them out before forwarding the FIN
    d, ops, pool, src, dst = setup("splice")
    src.redirected = True
    src.rx += b"r" * 3000
    src.eof = True
    real = ops.splice

    def splice_sees_fin(fd_in, fd_out, n):
        if fd_in == d.src:
            return 0
        return real(fd_in, fd_out, n)
    ops.splice = splice_sees_fin
    assert run_until_wait(d) == forward.DONE
    assert bytes(dst.tx) == b"r" * 3000 and dst.shut_wr and d.fallback == "redirected"


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_a_held_fin_goes_out_only_when_asked_and_once(mode):
    d, ops, pool, src, dst = setup(mode)
    d.hold_fin = True
    src.rx += b"last bytes"
    src.eof = True
    assert run_until_wait(d) == forward.DONE
    assert dst.tx == b"last bytes" and not dst.shut_wr and d.shut and not d.fin_sent
    d.send_fin()
    d.send_fin()
    assert dst.shut_wr and d.fin_sent and ops.calls.get("shutdown") == 1


def test_send_fin_before_the_end_does_nothing():
    d, ops, pool, src, dst = setup("copy")
    d.hold_fin = True
    src.rx += b"more to come"
    assert run_until_wait(d) == forward.WANT_READ
    d.send_fin()
    assert not dst.shut_wr and not d.fin_sent
