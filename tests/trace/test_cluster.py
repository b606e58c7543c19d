"""trace on a live demo cluster (`fastpath up`): break it in each of the four ways the
issue names, check that `fastpath check` fails and `fastpath trace` names the cause in one
line, repair, and check that `fastpath check` passes again. The four run on static routing
(a deleted static route stays deleted); with BGP, a missing route is traced to the BGP
session that went down."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fastpath.cli import main
from tests.conftest import run_fastpath

pytestmark = pytest.mark.root


def trace(capsys, *argv: str) -> tuple[int, str]:
    """`fastpath trace ...` in this process (the kernel objects are the same; it saves a
    Python start per call)."""
    capsys.readouterr()
    rc = main(["trace", *argv])
    return rc, capsys.readouterr().out


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def cluster():
    run_fastpath("up", "--routing", "static")
    try:
        yield json.loads(run_fastpath("status", "--json").stdout)
    finally:
        run_fastpath("down", check=False)


def node(c, name):
    return next(n for n in c["nodes"] if n["name"] == name)


def pod(c, name):
    return next(p for p in c["pods"] if p["name"] == name)


@dataclass
class Breakage:
    name: str
    kind: str
    says: Callable       # cluster -> a piece of the cause line
    breaks: Callable
    repairs: Callable


def _route_to_node2(c, verb):
    n1, n2 = node(c, "node1"), node(c, "node2")
    sh("ip", "-n", n1["netns"], "route", verb, n2["pod_cidr"], "via", n2["underlay_ip"],
       "proto", "102")


def _fp_forward(c, flag):
    sh("ip", "netns", "exec", node(c, "node2")["netns"], "iptables", flag, "FP-FORWARD",
       "-m", "devgroup", "--dst-group", "0x6670", "-j", "ACCEPT")


def _host_veth(c, up):
    p, n2 = pod(c, "node2-pod1"), node(c, "node2")["netns"]
    sh("ip", "-n", n2, "link", "set", p["host_ifname"], "up" if up else "down")
    if up:  # the kernel removed the pod's /32 route with the link
        sh("ip", "-n", n2, "route", "add", f"{p['ip']}/32", "dev", p["host_ifname"],
           "scope", "link")


def _asymmetric(c, verb):
    # node2 sends node1-pod1's address out toward node2-pod1: with strict rp_filter the
    # packets node1-pod1 sends in over the underlay no longer pass the reverse-path check.
    sh("ip", "-n", node(c, "node2")["netns"], "route", verb, f"{pod(c, 'node1-pod1')['ip']}/32",
       "dev", pod(c, "node2-pod1")["host_ifname"])


BREAKAGES = [
    Breakage("no-route", "no-route",
             lambda c: (f"no route to {pod(c, 'node2-pod1')['ip']} in node node1 (Network is "
                        f"unreachable): node1 has no route for node2's pod CIDR "
                        f"{node(c, 'node2')['pod_cidr']} (expected via "
                        f"{node(c, 'node2')['underlay_ip']}, static routing)"),
             lambda c: _route_to_node2(c, "del"), lambda c: _route_to_node2(c, "add")),
    Breakage("forward-policy-drop", "policy-drop",
             lambda c: "FORWARD policy DROP in node node2 (filter table): no rule accepts tcp",
             lambda c: _fp_forward(c, "-D"), lambda c: _fp_forward(c, "-A")),
    Breakage("link-down", "link-down",
             lambda c: f"link down: {pod(c, 'node2-pod1')['host_ifname']} in node node2",
             lambda c: _host_veth(c, False), lambda c: _host_veth(c, True)),
    Breakage("rp-filter", "rp-filter",
             lambda c: ("reverse-path filter drops it in node node2 on eth0: rp_filter=1 "
                        "(max of all=1, eth0="),
             lambda c: _asymmetric(c, "add"), lambda c: _asymmetric(c, "del")),
]


@pytest.mark.parametrize("b", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_trace_names_each_break_on_a_live_cluster(cluster, b, capsys):
    b.breaks(cluster)
    assert run_fastpath("check", "--timeout", "0.5", check=False).returncode != 0
    rc, out = trace(capsys, "node1-pod1", "node2-pod1", "--json")
    assert rc == 1
    d = json.loads(out)
    assert d["cause"]["kind"] == b.kind, d["summary"]
    assert b.says(cluster) in d["summary"]
    assert "\n" not in d["summary"]
    rc, out = trace(capsys, "node1-pod1", "node2-pod1")
    assert rc == 1 and f"BROKEN {d['summary']}" in " ".join(out.split("\n"))
    b.repairs(cluster)
    run_fastpath("check")
    rc, out = trace(capsys, "node1-pod1", "node2-pod1", "--json")
    assert rc == 0 and json.loads(out)["ok"]


def test_same_node_icmp_and_names_from_the_cluster(cluster):
    d = json.loads(run_fastpath("trace", "node1-pod1", "node1-pod2", "--proto", "icmp",
                                "--json").stdout)
    assert d["ok"] and [h["label"] for h in d["hops"]] == ["pod node1-pod1", "node node1",
                                                            "pod node1-pod2"]
    assert d["reply"]["ok"] and d["proto"] == "icmp" and d["port"] is None
    # an address and a node name resolve too
    d = json.loads(run_fastpath("trace", pod(cluster, "node2-pod2")["ip"], "node1",
                                "--json").stdout)
    assert d["src"]["label"] == "pod node2-pod2" and d["dst"]["label"] == "node node1"
    assert d["ok"] and d["hops"][-1]["hooks"][-1]["hook"] == "INPUT"
    p = run_fastpath("trace", "node1-pod1", "node9-pod1", check=False)
    assert p.returncode == 2 and "unknown destination 'node9-pod1'" in p.stderr


def test_a_vanished_pod_netns_is_one_line(cluster, capsys):
    sh("ip", "netns", "del", pod(cluster, "node2-pod2")["netns"])
    p = run_fastpath("trace", "node1-pod1", "node2-pod2", check=False)
    assert p.returncode == 2
    assert p.stderr.strip() == (
        f"fastpath: pod node2-pod2: its network namespace {pod(cluster, 'node2-pod2')['netns']} "
        f"has vanished (fastpath status shows the cluster; pod del and pod add recreate a pod)")
    rc, out = trace(capsys, "node1-pod1", "node2-pod1", "--json")
    assert rc == 0 and json.loads(out)["ok"]   # the rest of the cluster is unaffected


def test_a_missing_route_under_bgp_names_the_session(capsys):
    run_fastpath("up", "--pods", "1", "--routing", "bgp")
    try:
        c = json.loads(run_fastpath("status", "--json").stdout)
        n1, n2 = node(c, "node1"), node(c, "node2")
        subprocess.run(["kill", "-9", str(c["routes"]["node2"]["bird_pid"])], check=True)
        deadline = time.monotonic() + 5
        while n2["pod_cidr"] in subprocess.run(["ip", "-n", n1["netns"], "route"], text=True,
                                               capture_output=True).stdout:
            assert time.monotonic() < deadline, "node1 kept node2's route after its BIRD died"
            time.sleep(0.05)
        rc, out = trace(capsys, "node1-pod1", "node2-pod1", "--json")
        d = json.loads(out)
        assert rc == 1 and d["cause"]["kind"] == "no-route", d["summary"]
        assert "BIRD of node node2 is not running, so node1 has no BGP route" in d["summary"], d["summary"]
        run_fastpath("bgp", "start")
        deadline = time.monotonic() + 15
        while run_fastpath("check", "--timeout", "0.5", check=False).returncode != 0:
            assert time.monotonic() < deadline, "routes did not return after BIRD restarted"
            time.sleep(0.3)
        rc, out = trace(capsys, "node1-pod1", "node2-pod1", "--json")
        assert rc == 0 and json.loads(out)["ok"]
    finally:
        run_fastpath("down", check=False)
