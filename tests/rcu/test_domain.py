"""The in-process domain with real threads: sections, QSBR, synchronize, call_rcu, barrier."""

import gc
import threading
import time

import pytest

from fastpath.errors import UsageError
from fastpath.rcu.domain import Domain, Protected, RcuMap


@pytest.fixture
def domain():
    d = Domain("test")
    yield d
    d.close()


def in_thread(fn):
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_synchronize_waits_for_a_section_open_before_it(domain):
    inside, release, left = threading.Event(), threading.Event(), []

    def reader():
        with domain.read():
            inside.set()
            release.wait(5)
            left.append(time.monotonic())

    t = in_thread(reader)
    inside.wait(5)
    threading.Timer(0.1, release.set).start()
    domain.synchronize()
    done = time.monotonic()
    t.join(5)
    assert left and left[0] <= done, "synchronize() returned while a reader was inside"


def test_sections_that_start_later_do_not_hold_it_up(domain):
    stop = threading.Event()

    def churn():
        sec = domain.read()
        while not stop.is_set():
            with sec:
                pass

    t = in_thread(churn)
    try:
        for _ in range(50):
            assert domain.synchronize() < 2.0
    finally:
        stop.set()
        t.join(5)


def test_nested_sections(domain):
    with domain.read():
        with domain.read():
            pass
        with pytest.raises(UsageError):
            domain.synchronize()
    domain.synchronize()


def test_qsbr_reader_holds_the_grace_period_until_it_reports(domain):
    online, report, reported_at = threading.Event(), threading.Event(), []

    def reader():
        domain.online()
        online.set()
        report.wait(5)
        reported_at.append(time.monotonic())
        domain.quiescent()
        domain.offline()

    t = in_thread(reader)
    online.wait(5)
    threading.Timer(0.1, report.set).start()
    domain.synchronize()
    assert reported_at and reported_at[0] <= time.monotonic()
    t.join(5)
    domain.synchronize()        # offline: blocks nobody


def test_call_rcu_runs_after_the_grace_period_and_barrier_waits(domain):
    ref = Protected(domain, {"fd": 1})
    inside, release, seen = threading.Event(), threading.Event(), []
    closed = []

    def reader():
        with domain.read():
            obj = ref.get()
            inside.set()
            release.wait(5)
            seen.append(bool(closed))   # must still be open while we hold it
            obj["used"] = True

    t = in_thread(reader)
    inside.wait(5)
    ref.replace({"fd": 2}, retire=closed.append)
    time.sleep(0.05)
    assert closed == [], "a callback ran while a reader still held the old object"
    assert domain.pending_callbacks == 1
    release.set()
    domain.barrier(timeout=5)
    t.join(5)
    assert seen == [False] and closed and closed[0]["fd"] == 1
    st = domain.stats()
    assert st["pending_callbacks"] == 0 and st["callbacks_run"] == 1 and st["grace_periods"] >= 1


def test_callback_errors_are_counted_not_fatal(domain):
    domain.call_rcu(lambda: 1 / 0)
    ran = []
    domain.call_rcu(ran.append, "ok")
    domain.barrier(timeout=5)
    assert ran == ["ok"] and domain.stats()["callback_errors"] == 1


def test_rcu_map_retires_displaced_values(domain):
    retired = []
    m = RcuMap(domain, {"a": 1}, on_retire=retired.append)
    snap = m.snapshot()
    m["b"] = 2
    m.set("a", 10)
    del m["b"]
    m.update_many({"c": 3}, deletes=["a"])
    assert dict(m) == {"c": 3} and dict(snap) == {"a": 1}
    domain.barrier(timeout=5)
    assert sorted(retired) == [1, 2, 10]
    with pytest.raises(KeyError):
        m.delete("zz")
    m.replace_all({"x": 9})
    domain.barrier(timeout=5)
    assert dict(m) == {"x": 9} and 3 in retired


def test_slots_of_finished_threads_are_reused(domain):
    def reg():
        with domain.read():
            pass
        domain.online()
        domain.offline()
    for _ in range(3):
        t = in_thread(reg)
        t.join(5)
    del t
    gc.collect()
    deadline = time.monotonic() + 5
    while domain.stats()["readers"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert domain.stats()["readers"] == 0
    with domain.read():
        pass
    domain.unregister()
    assert domain.stats()["readers"] == 0


def test_torture_in_process_no_reader_sees_a_retired_object(domain):
    """Readers check a `closed` flag that the retire callback sets: never seen inside."""
    class Res:
        def __init__(self):
            self.closed = False
    refs = [Protected(domain, Res()) for _ in range(3)]
    bad, reads, stop = [], [0], threading.Event()

    def section_reader():
        sec = domain.read()
        while not stop.is_set():
            with sec:
                for r in refs:
                    o = r.get()
                    time.sleep(0)
                    if o.closed:
                        bad.append(o)
                    reads[0] += 1

    def qsbr_reader():
        domain.online()
        while not stop.is_set():
            for r in refs:
                if r.get().closed:
                    bad.append(r)
            domain.quiescent()
        domain.offline()

    ts = [in_thread(section_reader), in_thread(section_reader), in_thread(qsbr_reader)]
    end = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < end:
        refs[n % 3].replace(Res(), retire=lambda o: setattr(o, "closed", True))
        n += 1
        if n % 50 == 0:
            time.sleep(0.001)
    stop.set()
    for t in ts:
        t.join(5)
    domain.barrier(timeout=10)
    assert not bad and reads[0] > 100 and domain.stats()["callbacks_run"] == n


def test_registered_domain_stats_are_visible_to_rcu_stats(fastpath):
    import json
    import os

    from fastpath.rcu import registry
    from fastpath.shm.memfd import PAGE_SIZE
    d = Domain("agent", export_stats=True)
    note = registry.register("agent", os.getpid(), d.stats_fd, PAGE_SIZE, "domain")
    try:
        with d.read():
            pass
        d.call_rcu(lambda: None)
        d.barrier(timeout=5)
        out = json.loads(fastpath("rcu", "stats", "--json").stdout)
        [dom] = out["domains"]
        assert dom["name"] == "agent" and dom["callbacks_run"] == 1 and dom["grace_periods"] >= 1
        assert dom["pending_callbacks"] == 0 and dom["readers"] == 1
        assert "agent" in fastpath("rcu", "stats").stdout
    finally:
        registry.unregister(note)
        d.close()
    assert json.loads(fastpath("rcu", "stats", "--json").stdout)["domains"] == []
    assert json.loads(fastpath("rcu", "stats", "--json").stdout)["domains"] == []
