"""The demo cluster with BGP routing, through the `fastpath` command as a user runs it."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

pytestmark = pytest.mark.root


def status(fastpath):
    """The cluster's status; while a fault is injected it exits 1 (its verdict agrees with
    its JSON, which the callers read)."""
    p = fastpath("status", "--json", check=False)
    d = json.loads(p.stdout)
    assert p.returncode == (0 if d["health"]["ok"] else 1), (p.returncode, d["health"])
    return d


def sessions(fastpath):
    return {(n, s["peer"]): s for n, v in status(fastpath)["routes"].items() for s in v["sessions"]}


def wait_for(pred, timeout, step=0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"not true within {timeout}s")


def no_route_to(fastpath, cidr, nodes):
    routes = status(fastpath)["routes"]
    return all(not any(r.startswith(cidr + " ") for r in routes[n]["installed"]) for n in nodes)


def same_since(a, b):
    """BIRD derives a protocol's wall-clock "since" from its monotonic clock at each read,
    so it can move by a millisecond; a session reset moves it by seconds."""
    from datetime import datetime
    return abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds()) < 0.05


@pytest.fixture
def cluster(fastpath):
    yield
    fastpath("down", check=False)


def test_up_add_del_faults_down(fastpath, cluster, instance):
    fastpath("up", "--nodes", "3", "--pods", "1", "--routing", "bgp")
    st = status(fastpath)
    assert st["routing"] == "bgp" and st["health"]["ok"], st["health"]
    assert all(not v["missing"] for v in st["routes"].values())
    assert all(s["state"] == "Established" for s in sessions(fastpath).values())
    fastpath("check")
    before = sessions(fastpath)

    # node add: the others are reconfigured in place, their sessions keep their start time
    fastpath("node", "add")
    fastpath("pod", "add", "node4")
    fastpath("check")
    after = sessions(fastpath)
    assert {k for k in after if "node4" in k} == {("node4", "node1"), ("node4", "node2"),
                                                  ("node4", "node3"), ("node1", "node4"),
                                                  ("node2", "node4"), ("node3", "node4")}
    for k, s in before.items():
        assert same_since(after[k]["since"], s["since"]), k

    # node del: same
    fastpath("node", "del", "node2")
    fastpath("check")
    left = sessions(fastpath)
    assert not any("node2" in k for k in left)
    assert same_since(left[("node1", "node3")]["since"], before[("node1", "node3")]["since"])

    # cut node3's underlay link: within the hold time the others withdraw its CIDR
    ns = f"fp-{instance}-node3"
    st = status(fastpath)
    cidr3 = next(n["pod_cidr"] for n in st["nodes"] if n["name"] == "node3")
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)
    wait_for(lambda: no_route_to(fastpath, cidr3, ["node1", "node4"]), 3 + 3)
    assert fastpath("check", "--timeout", "0.5", check=False).returncode == 1
    # what `fastpath trace` asks the routing backend when a cross-node route is missing
    from fastpath.podnet import cluster as podnet_cluster
    from fastpath.podnet import routing
    c = podnet_cluster.load()
    why = routing.get(c.routing).explain_missing_route(c, c.node("node1"), c.node("node3"), "x")
    assert why.startswith("BGP session node1 -> node3 is down"), why
    from fastpath.bgp import session_down
    assert session_down("node4", "node3")
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
    wait_for(lambda: fastpath("check", "--timeout", "0.5", check=False).returncode == 0, 15, 0.3)

    # kill node4's BIRD: the others withdraw; `fastpath bgp start` brings it back
    pid = status(fastpath)["routes"]["node4"]["bird_pid"]
    cidr4 = next(n["pod_cidr"] for n in st["nodes"] if n["name"] == "node4")
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: no_route_to(fastpath, cidr4, ["node1", "node3"]), 3 + 2)
    assert fastpath("bgp", "sessions", check=False).returncode == 1
    out = json.loads(fastpath("bgp", "start", "--json").stdout)
    assert out["started"] == ["node4"]
    fastpath("check")

    fastpath("down")
    assert subprocess.run(["pgrep", "-f", f"bgp/fp-{instance}/"], capture_output=True).returncode == 1


def test_route_reflector_and_refusals(fastpath, cluster, instance, state_dir):
    fastpath("up", "--nodes", "3", "--pods", "1", "--route-reflector", "node1", "--routing", "bgp")
    s = sessions(fastpath)
    assert set(s) == {("node1", "node2"), ("node1", "node3"), ("node2", "node1"), ("node3", "node1")}
    fastpath("check")
    assert fastpath("bgp", "config", "node1").stdout.count("rr client;") == 2
    assert "rr client" not in fastpath("bgp", "config", "node2").stdout
    fastpath("node", "add")
    assert ("node4", "node1") in sessions(fastpath) and ("node4", "node2") not in sessions(fastpath)
    fastpath("check")
    confs = {p.name: p.read_text() for p in (state_dir / "bgp").rglob("*.conf")}

    # the reflector cannot go; a conflicting pod CIDR is refused: nothing changes
    p = fastpath("node", "del", "node1", check=False)
    assert p.returncode == 2 and "route reflector" in p.stderr
    p = fastpath("node", "add", "node9", "--pod-cidr", "10.244.2.0/24", check=False)
    assert p.returncode != 0 and "10.244.2.0/24" in p.stderr
    assert {p.name: p.read_text() for p in (state_dir / "bgp").rglob("*.conf")} == confs
    fastpath("check")


def test_up_without_bird_is_refused_cleanly(fastpath, instance, monkeypatch):
    monkeypatch.setenv("FASTPATH_BIRD", "/nonexistent/bird")
    p = fastpath("up", "--nodes", "2", "--pods", "1", check=False)
    assert p.returncode == 1
    assert "bird is not installed" in p.stderr and "--routing static" in p.stderr
    assert p.stderr.count("\n") == 1
    assert fastpath("status", check=False).returncode != 0   # no cluster was left
