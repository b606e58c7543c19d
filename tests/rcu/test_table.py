"""SharedTable across real processes: attach by fd, lookups, grace periods, dead and stalled
readers, statistics."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fastpath.errors import FastpathError, UsageError
from fastpath.rcu import registry
from fastpath.rcu.table import GraceStalled, SharedTable
from fastpath.shm.memfd import Region


@pytest.fixture
def table():
    t = SharedTable.create(1 << 16, readers=8, versions=4, name="svc", poison=True, stall_after=0.3)
    yield t
    t.close()


def fork(fn):
    """Run fn() in a forked child; returns its pid. The child never returns here."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_line(fd, timeout=10.0):
    os.set_blocking(fd, True)
    import select
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "child did not answer"
    return os.read(fd, 4096).decode()


READER_SCRIPT = r"""
import os, sys, json
from fastpath.rcu.table import SharedTable
t = SharedTable.attach(int(sys.argv[1]))
out = {"a": t.lookup(b"a").decode(), "missing": t.lookup(b"zz"), "len": len(t)}
t.quiescent()
print(json.dumps(out), flush=True)
sys.stdin.readline()          # wait for the writer's update
t.quiescent()
print(json.dumps({"a": t.lookup(b"a").decode()}), flush=True)
t.close()
"""


def test_unrelated_process_attaches_by_fd_and_sees_updates(table):
    table.publish({b"a": b"1", b"b": b"2"})
    p = subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(table.fd)], pass_fds=[table.fd],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline()) == {"a": "1", "missing": None, "len": 2}
        assert len(table.stats()["readers"]) == 1
        table.update(b"a", b"new")
        p.stdin.write("go\n")
        p.stdin.flush()
        assert json.loads(p.stdout.readline()) == {"a": "new"}
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait()
    table.synchronize(timeout=5)
    assert table.stats()["readers"] == []   # its slot was freed on close


def test_writer_reuses_space_only_after_readers_pass_a_quiescent_state(table):
    """A reader holding a snapshot (online, no quiescent state) keeps its version intact
    while the writer publishes; the writer runs out of buffers and waits rather than reuse."""
    table.publish({b"k": b"v0"})
    r_fd, w_fd = os.pipe()
    go_r, go_w = os.pipe()

    def child():
        t = SharedTable.attach(table.fd)
        snap = t.snapshot()
        os.write(w_fd, b"held\n")
        os.read(go_r, 1)               # hold the snapshot across the writer's updates
        ok = snap.intact() and snap.lookup(b"k") == b"v0"
        t.quiescent()
        os.write(w_fd, b"intact\n" if ok else b"TORN\n")
        t.close()

    pid = fork(child)
    try:
        assert wait_line(r_fd) == "held\n"
        # 4 versions: the held one is current; three more publishes fit, the next waits.
        for i in (1, 2, 3):
            table.update(b"k", b"v%d" % i)
        with pytest.raises(GraceStalled, match=f"pid {pid}"):
            table.update(b"k", b"v4", timeout=0.2)
        os.write(go_w, b"x")
        assert wait_line(r_fd) == "intact\n"
        table.update(b"k", b"v4", timeout=5)
        assert table.lookup(b"k") == b"v4"
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (r_fd, w_fd, go_r, go_w):
            os.close(fd)


def test_dead_reader_does_not_block_grace_periods(table):
    r_fd, w_fd = os.pipe()

    def child():
        SharedTable.attach(table.fd)     # online, and never reports again
        os.write(w_fd, b"on\n")
        time.sleep(60)

    pid = fork(child)
    try:
        assert wait_line(r_fd) == "on\n"
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for i in range(10):           # more publishes than versions: needs grace periods
            table.update(b"k", b"%d" % i, timeout=5)
        st = table.stats()
        assert st["dead_readers"] == 1 and st["readers"] == []
    finally:
        os.close(r_fd)
        os.close(w_fd)


def test_zombie_reader_counts_as_dead(table):
    r_fd, w_fd = os.pipe()

    def child():
        SharedTable.attach(table.fd)
        os.write(w_fd, b"on\n")
        os._exit(0)          # exits online; not reaped until the end of the test

    pid = fork(child)
    try:
        assert wait_line(r_fd) == "on\n"
        time.sleep(0.1)
        assert table.synchronize(timeout=5) < 5
    finally:
        os.waitpid(pid, 0)
        os.close(r_fd)
        os.close(w_fd)


def test_stalled_reader_is_reported_then_recovers(table):
    stalls = []
    table.on_stall = stalls.append
    r_fd, w_fd = os.pipe()

    def child():
        t = SharedTable.attach(table.fd)
        os.write(w_fd, b"on\n")
        time.sleep(0.6)               # online, no quiescent state: stalls (stall_after 0.3 s)
        t.quiescent()
        t.offline()
        time.sleep(0.2)
        t.close()

    pid = fork(child)
    try:
        assert wait_line(r_fd) == "on\n"
        took = table.synchronize(timeout=5)
        assert took >= 0.3
        assert [s.slot.pid for s in stalls] == [pid]
        st = table.stats()
        assert st["stalls"] == 1 and st["last_stalled_tid"] == pid and st["gp_max_ms"] >= 300
    finally:
        os.waitpid(pid, 0)
        os.close(r_fd)
        os.close(w_fd)


def test_offline_reader_blocks_nobody_and_reader_threads_get_their_own_slots(table):
    import threading
    t = SharedTable.attach(table.fd)
    try:
        table.publish({b"x": b"1"})
        t.offline()
        table.synchronize(timeout=1)
        t.online()
        got = []

        def th():
            r = t.reader()
            got.append((r.index, r.lookup(b"x")))
            r.close()
        th_ = threading.Thread(target=th)
        th_.start()
        th_.join(5)
        assert got and got[0][1] == b"1" and got[0][0] != t._default.index
        with t._default.idle():
            table.synchronize(timeout=1)
    finally:
        t.close()


def test_reader_slots_run_out_with_a_clear_error(table):
    readers = [SharedTable.attach(table.fd) for _ in range(8)]
    try:
        with pytest.raises(FastpathError, match="reader slots"):
            SharedTable.attach(table.fd)
    finally:
        for r in readers:
            r.close()


def test_bad_uses(table):
    r = SharedTable.attach(table.fd)
    try:
        with pytest.raises(UsageError):
            r.update(b"a", b"b")
        with pytest.raises(UsageError):
            r.synchronize()
    finally:
        r.close()
    with Region.create(4096) as other, pytest.raises(UsageError, match="SharedTable"):
        SharedTable.attach(other.fd)
    with Region.create(0) as empty, pytest.raises(UsageError, match="SharedTable"):
        SharedTable.attach(empty.fd)
    with pytest.raises(UsageError):
        SharedTable.create(1024, versions=1)
    from fastpath.rcu.layout import TableFull
    with pytest.raises(TableFull):
        table.publish({b"k%d" % i: b"x" * 1000 for i in range(100)})
    assert table.lookup(b"k1") is None      # the failed publish changed nothing
    table.update(b"ok", b"1")
    assert table.lookup(b"ok") == b"1"


def test_registry_and_stats_through_proc(table, fastpath):
    """The core writes no note; the caller does, and `rcu stats` reads through /proc."""
    from fastpath.rcu import stats
    assert registry.tables() == []
    note = registry.register("svc", os.getpid(), table.fd, table.size, "table")
    table.publish({b"a": b"1"})
    table.synchronize(timeout=1)
    notes = registry.tables()
    assert [n["name"] for n in notes] == ["svc"]
    st = stats.read(notes[0])
    assert st["entries"] == 1 and st["writer_pid"] == os.getpid() and st["publishes"] >= 2
    out = json.loads(fastpath("rcu", "stats", "--json").stdout)
    assert [t["name"] for t in out["tables"]] == ["svc"]
    assert out["tables"][0]["synchronize_calls"] == 1
    assert fastpath("rcu", "stats", "nope", check=False).returncode == 2
    assert "svc" in fastpath("rcu", "stats").stdout
    registry.unregister(note)
    assert registry.tables() == []


def test_dead_offline_readers_slots_are_swept(table):
    def child():
        t = SharedTable.attach(table.fd)
        t.offline()
        os._exit(0)            # dies offline: blocks nothing, but holds a slot

    pid = fork(child)
    os.waitpid(pid, 0)
    assert [r["pid"] for r in table.stats()["readers"]] == [pid]
    table.synchronize(timeout=1)          # offline: no wait, and not freed by the grace period
    assert table.sweep() == 1
    assert table.stats()["readers"] == [] and table.stats()["dead_readers"] == 1


def test_a_slot_being_registered_is_not_swept():
    from fastpath.rcu.grace import Slot
    from fastpath.rcu.table import _alive
    assert _alive(Slot(0, qs=0, tid=999_999_999, pid=1, starttime=0))
    assert not _alive(Slot(0, qs=0, tid=999_999_999, pid=1, starttime=5))


SCM_SCRIPT = r"""
import socket, sys
from fastpath.rcu.table import SharedTable
sock = socket.socket(fileno=int(sys.argv[1]))
msg, fds, flags, addr = socket.recv_fds(sock, 16, 1)
t = SharedTable.attach(fds[0])
print(t.lookup(b"svc").decode(), flush=True)
t.close()
"""


def test_attach_an_fd_received_with_scm_rights(table):
    import socket
    table.update(b"svc", b"10.0.0.1:80")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = subprocess.Popen([sys.executable, "-c", SCM_SCRIPT, str(b.fileno())], pass_fds=[b.fileno()],
                         stdout=subprocess.PIPE, text=True)
    try:
        b.close()
        socket.send_fds(a, [b"table"], [table.fd])
        assert p.stdout.readline().strip() == "10.0.0.1:80"
        assert p.wait(10) == 0
    finally:
        a.close()
        p.kill()
        p.wait()
