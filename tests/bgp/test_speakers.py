"""BIRD on real namespaces: convergence, node add/del, faults, refusals."""

from __future__ import annotations

import signal
import time

import pytest

from fastpath.bgp import bird, speakers, store
from fastpath.bgp.model import Mesh, Timers
from fastpath.errors import ConfigError, MissingDependency
from fastpath.kernel import proc

pytestmark = pytest.mark.root

HOLD = Timers().hold


def wait_until(pred, timeout, step=0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"not true within {timeout}s")


def same_since(a, b):
    """BIRD derives "since" from its monotonic clock at each read: it may move by a
    millisecond between reads; a session reset moves it by seconds."""
    from datetime import datetime
    return abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds()) < 0.05


def since(mesh):
    return {(s.node, s.peer): s.since for v in speakers.all_sessions(mesh).values() for s in v}


@pytest.mark.parametrize("reflector", [None, "node2"])
def test_converges_and_routes_pods(bed, reflector):
    nodes = [bed.add(i) for i in (1, 2, 3)]
    mesh = Mesh(tuple(nodes), reflector=reflector)
    report = speakers.apply(mesh)
    assert report.started == ["node1", "node2", "node3"]
    speakers.wait_converged(mesh, timeout=15)
    for a in nodes:
        routes = speakers.kernel_routes(a.netns)
        assert routes == {b.pod_cidr for b in nodes if b is not a}  # nothing else imported
        for b in nodes:
            if b is not a:
                assert bed.tb.reachable(a, b), f"{a.name} -> {b.name}"
    sessions = speakers.all_sessions(mesh)
    if reflector:
        assert [s.peer for s in sessions["node1"]] == ["node2"]
        assert sorted(s.peer for s in sessions["node2"]) == ["node1", "node3"]
    assert all(s.established and s.imported >= 1 and s.exported >= 1
               for v in sessions.values() for s in v)
    assert speakers.route_cause("node1", "node3") is None


def test_node_add_and_del_keep_other_sessions(bed):
    nodes = [bed.add(i) for i in (1, 2)]
    mesh = Mesh(tuple(nodes))
    speakers.apply(mesh)
    speakers.wait_converged(mesh, timeout=15)
    wait_until(lambda: all(s.established for v in speakers.all_sessions(mesh).values() for s in v), 10)
    before = since(mesh)
    pids = {n.name: bird.running_pid(n.name) for n in nodes}

    n3 = bed.add(3)
    grown = mesh.with_node(n3)
    report = speakers.apply(grown)
    assert report.reconfigured == ["node1", "node2"] and report.started == ["node3"]
    speakers.wait_converged(grown, timeout=15)
    after = since(grown)
    assert same_since(after[("node1", "node2")], before[("node1", "node2")])
    assert same_since(after[("node2", "node1")], before[("node2", "node1")])
    assert {n.name: bird.running_pid(n.name) for n in nodes} == pids  # no restart

    report = speakers.apply(mesh)
    assert report.stopped == ["node3"] and report.reconfigured == ["node1", "node2"]
    assert bird.running_pid("node3") is None
    assert not bird.BirdPaths.of("node3").ctl.exists()
    for n in nodes:
        assert n3.pod_cidr not in speakers.kernel_routes(n.netns)
    assert same_since(since(mesh)[("node1", "node2")], before[("node1", "node2")])
    assert store.load() == mesh


def test_killed_bird_withdrawn_then_restored(bed):
    nodes = [bed.add(i) for i in (1, 2, 3)]
    mesh = Mesh(tuple(nodes))
    speakers.apply(mesh)
    speakers.wait_converged(mesh, timeout=15)
    n3 = nodes[2]
    assert bird.signal_bird("node3", signal.SIGKILL)
    took = wait_until(lambda: all(n3.pod_cidr not in speakers.kernel_routes(n.netns)
                                  for n in nodes[:2]), HOLD + 2)
    assert took <= HOLD + 2
    assert "BIRD of node node3 is not running" in speakers.route_cause("node1", "node3")
    assert speakers.session_down("node1", "node3")
    assert not bed.tb.reachable(nodes[0], n3, timeout=0.5)
    report = speakers.apply(mesh)  # what `up`/`node` re-apply does: start what is missing
    assert report.started == ["node3"]
    speakers.wait_converged(mesh, timeout=15)
    assert bed.tb.reachable(nodes[0], n3) and bed.tb.reachable(n3, nodes[1])


def test_cut_underlay_withdrawn_within_hold_then_restored(bed):
    nodes = [bed.add(i) for i in (1, 2, 3)]
    mesh = Mesh(tuple(nodes))
    speakers.apply(mesh)
    speakers.wait_converged(mesh, timeout=15)
    n3 = nodes[2]
    bed.tb.set_underlay_link(n3, up=False)
    # the others see no TCP reset: only the hold timer tells them
    took = wait_until(lambda: all(n3.pod_cidr not in speakers.kernel_routes(n.netns)
                                  for n in nodes[:2]), HOLD + 3)
    assert took >= 1.0  # it was the hold timer, not an instant close
    cause = speakers.route_cause("node1", "node3")
    assert cause and cause.startswith("BGP session node1 -> node3 is down")
    bed.tb.set_underlay_link(n3, up=True)
    speakers.wait_converged(mesh, timeout=20)
    assert bird.running_pid("node3")
    assert bed.tb.reachable(nodes[0], n3)


def test_conflicting_node_refused_before_anything_changes(bed):
    nodes = [bed.add(i) for i in (1, 2)]
    mesh = Mesh(tuple(nodes))
    speakers.apply(mesh)
    confs = {n.name: bird.BirdPaths.of(n.name).conf.read_text() for n in nodes}
    pids = {n.name: bird.running_pid(n.name) for n in nodes}
    n3 = bed.tb.node_def(3)
    for bad, msg in ((dict(pod_cidr=nodes[0].pod_cidr), "already node 'node1'"),
                     (dict(router_id=nodes[1].router_id), "router id"),
                     (dict(pod_cidr="10.238.0.0/16"), "overlaps")):
        with pytest.raises(ConfigError, match=msg):
            speakers.apply(mesh.with_node(n3.__class__(**{**n3.__dict__, **bad})))
    assert {n.name: bird.BirdPaths.of(n.name).conf.read_text() for n in nodes} == confs
    assert {n.name: bird.running_pid(n.name) for n in nodes} == pids
    assert not bird.BirdPaths.of("node3").conf.exists()
    assert store.load() == mesh


def test_config_bird_rejects_keeps_running_config(bed):
    nodes = [bed.add(i) for i in (1, 2)]
    mesh = Mesh(tuple(nodes))
    speakers.apply(mesh)
    speakers.wait_converged(mesh, timeout=15)
    paths = bird.BirdPaths.of("node1")
    good = paths.conf.read_text()
    bad = good.replace("hold time 3;", "hold time 3; bogus option 7;")
    with pytest.raises(bird.BirdRejected, match=r"node1\.conf:\d+:\d+ syntax error"):
        bird.reconfigure("node1", bad)
    assert paths.conf.read_text() == good
    # BIRD's own configure path refuses too and keeps the old config running
    from fastpath.bgp.control import BirdControl
    paths.conf.write_text(bad)
    try:
        with BirdControl(str(paths.ctl)) as ctl:
            r = ctl.command("configure")
        assert not r.ok and "syntax error" in r.message()
    finally:
        paths.conf.write_text(good)
    assert all(s.established for s in speakers.node_sessions(mesh, "node1"))
    assert nodes[1].pod_cidr in speakers.kernel_routes(nodes[0].netns)


def test_missing_bird_is_one_clear_error(bed, monkeypatch):
    nodes = [bed.add(1)]
    monkeypatch.setenv("FASTPATH_BIRD", "/nonexistent/bird")
    with pytest.raises(MissingDependency, match="bird is not installed"):
        speakers.apply(Mesh(tuple(nodes)))
    assert not bird.BirdPaths.of("node1").conf.exists()


def test_sweep_finds_birds_without_state(bed, state_dir):
    nodes = [bed.add(i) for i in (1, 2)]
    speakers.apply(Mesh(tuple(nodes)))
    pids = [bird.running_pid(n.name) for n in nodes]
    import shutil
    shutil.rmtree(state_dir)  # state lost: the sweep still finds them by netns
    from fastpath.bgp import sweep
    removed = sweep.sweep()
    assert {f"bird pid {p}" for p in pids} <= set(removed)
    assert not any(proc.alive(p) for p in pids)  # gone (a zombie awaits init's reaping)
    assert sweep.sweep() == []
