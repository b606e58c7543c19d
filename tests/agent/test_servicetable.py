"""The agent's service table against a real reader process that goes online and never
reports: the agent never blocks, says who holds it up, and replaces the table once the
reader is hung beyond the bound. Also the dead-node clock. No root needed."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fastpath.agent.deadnodes import DeadNodes
from fastpath.agent.servicetable import ServiceTable
from fastpath.cluster.objects import Alive, Node, View
from fastpath.rcu.table import SharedTable

HUNG_READER = r"""
import sys
from fastpath.rcu.table import SharedTable
t = SharedTable.attach(int(sys.argv[1]))      # registers and goes online
t.lookup(b"services")
print("online", flush=True)
sys.stdin.readline()                           # blocks online: never quiescent, never offline
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _small() -> SharedTable:
    return SharedTable.create(1 << 12, readers=4, versions=3, name="test-svc", stall_after=0.05)


@pytest.fixture
def hung_reader():
    procs = []

    def start(table: SharedTable) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HUNG_READER, str(table.fd)], pass_fds=(table.fd,),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "online"
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_reader_that_never_reports_costs_the_agent_nothing(hung_reader):
    clock = Clock()
    st = ServiceTable(b"services", create=_small, replace_after=10.0, clock=clock)
    try:
        assert st.set(b"v1")
        reader = hung_reader(st.table)
        first = st.table
        published = []
        for i in range(2, 10):    # more changes than the table has version buffers
            t0 = time.monotonic()
            published.append(st.set(f"v{i}".encode()))
            assert time.monotonic() - t0 < 0.5, "a publish waited for the hung reader"
        assert not all(published), "a table with 3 buffers took 8 publishes past a hung reader"
        assert st.pending == b"v9"    # only the newest value waits: it is the whole view
        why = st.problem()
        assert why is not None and f"pid {reader.pid}" in why, why
        clock.now += 10.0             # hung beyond the bound: a fresh table, the newest value in it
        assert st.flush() and st.pending is None and st.problem() is None
        assert st.table is not first and st.generation == 2 and st.replaced == 1
        assert st.table.lookup(b"services") == b"v9"
        # the hung reader's mapping of the old table still reads a whole version, never one
        # being rewritten: nobody writes the old table again
        assert reader.poll() is None
        assert st.set(b"v10") and st.table.lookup(b"services") == b"v10"
    finally:
        st.close()


def test_a_dead_reader_is_no_stall(hung_reader):
    st = ServiceTable(b"services", create=_small, clock=Clock())
    try:
        st.set(b"v1")
        reader = hung_reader(st.table)
        reader.kill()
        reader.wait()
        for i in range(2, 8):
            assert st.set(f"v{i}".encode()), "a dead reader's slot held a grace period up"
        assert st.problem() is None and st.generation == 1
    finally:
        st.close()


def _view(alive: list[str]) -> View:
    v = View()
    for i, name in enumerate(["node1", "node2", "node3"], 1):
        v.nodes[name] = Node(name, f"10.0.0.{i}/24", f"10.244.{i}.0/24")
    for a in alive:
        v.alive[a] = Alive(a, 1, 1, "h", 0.0)
    return v


def test_a_dead_agents_node_is_gone_for_services_only_after_the_grace():
    d = DeadNodes(grace=300)
    assert d.observe(_view(["node1", "node2"]), 0.0, me="node1")   # node3 dead
    assert d.gone(299.0) == set() and d.next_change(10.0) == 300.0
    assert not d.observe(_view(["node1", "node2"]), 299.0, me="node1")
    assert d.gone(300.0) == {"node3"} and d.next_change(300.0) is None
    assert d.report(300.0) == [{"node": "node3", "dead_since": 0.0, "gone": True}]
    # its agent comes back: alive again, and the clock starts over at its next death
    assert d.observe(_view(["node1", "node2", "node3"]), 301.0, me="node1")
    assert d.gone(1000.0) == set()
    # this agent's own node is never counted dead by itself (its lease may lapse briefly)
    assert not DeadNodes(10).observe(_view(["node2", "node3"]), 0.0, me="node1")
