"""The demo with a top-of-rack router: FRR in the underlay peers with every node's BIRD
over eBGP; the nodes learn each other's pod CIDRs only through it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from fastpath.agent import demo
from fastpath.bgp import bird, tor
from fastpath.podnet import cluster as cl
from tests.agent.test_demo_agents import bird_routes, wait_for
from tests.conftest import patience, require, run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def tor_demo():
    require(os.access("/usr/lib/frr/bgpd", os.X_OK) and shutil.which("vtysh") is not None,
            "FRR is not installed (apt-get install frr)")
    try:
        run_fastpath("up", "--nodes", "2", "--pods", "1", "--tor")
        yield cl.load()
    finally:
        run_fastpath("down", check=False)
        assert not tor.running(), "down left FRR running"


def test_nodes_route_through_the_tor_and_a_dead_node_leaves_it(tor_demo):
    c = tor_demo
    n1, n2 = c.nodes
    assert tor.established_peers() == sorted([n1.underlay_ip, n2.underlay_ip])
    assert set(tor.routes()) == {n1.pod_cidr, n2.pod_cidr}
    # no session between the nodes: each one's BGP routes came from the router
    protos = subprocess.run(["ip", "-n", n1.netns, "route", "show", "proto", "bird"], capture_output=True,
                            text=True).stdout
    assert n2.pod_cidr in protos
    st = json.loads(run_fastpath("status", "--node", n1.name, "--json").stdout)
    assert [s["protocol"] for s in st["sessions"]] == ["fp_ext_tor"]
    assert json.loads(run_fastpath("check", "--json").stdout)["ok"]
    peers = json.loads(run_fastpath("peer", "list", "--json").stdout)
    assert [(p["name"], p["asn"]) for p in peers] == [("tor", tor.DEFAULT_ASN)]
    # an ASN per node (RFC 7938), so the router's echo of a node's own block is dropped by
    # BIRD's AS-path loop check, quietly: no "Invalid NEXT_HOP" filling the BIRD logs
    asns = [n["asn"] for n in json.loads(run_fastpath("node", "list", "--json").stdout)]
    assert len(set(asns)) == len(asns), asns
    time.sleep(patience(2))
    for n in c.nodes:
        log = bird.BirdPaths.under(demo.node_state_dir(n.name), n.name).log
        text = log.read_text() if log.exists() else ""
        assert "Invalid NEXT_HOP" not in text, f"{n.name}'s BIRD log: {text[-500:]}"
    # node2 stops: the router withdraws its block, and node1 loses the route
    r = demo.AgentRouting()
    subprocess.run(["ip", "-n", c.underlay_netns, "link", "set", n2.bridge_port, "down"], check=True)
    t0 = time.monotonic()
    for pid in (demo.supervisor_pid(n2.name), demo.agent_pid(n2.name), r._bird_pid(n2.name)):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: n2.pod_cidr not in tor.routes(), patience(3 + 3), "FRR to withdraw node2's block",
             step=0.2)
    wait_for(lambda: n2.pod_cidr not in bird_routes(n1.netns), patience(3 + 3), "node1 to lose the route")
    print(f"node2 stopped: FRR and node1 withdrew its block after {time.monotonic() - t0:.1f}s")


def test_a_dead_tor_is_a_problem_status_names(tor_demo):
    """kill -9 of the router's bgpd: every node's session to it goes down, and status says
    so (non-zero, the session named per node, its JSON agreeing with its tables)."""
    c = tor_demo
    os.kill(tor.running()["bgpd"], signal.SIGKILL)

    def down():
        p = run_fastpath("status", "--json", check=False)
        st = json.loads(p.stdout)
        return (p.returncode, st) if p.returncode == 1 and all(
            not s["established"] for n in c.nodes for s in st["routes"][n.name]["sessions"]) else None
    code, st = wait_for(down, patience(3 + 5), "status to see the sessions down", step=0.5)
    assert not st["health"]["ok"]
    for n in c.nodes:
        assert [s["peer"] for s in st["routes"][n.name]["sessions"]] == ["tor"]
        problems = st["health"]["problems"]
        assert any(p.startswith(f"node {n.name}: BGP session with tor is ") for p in problems), problems
