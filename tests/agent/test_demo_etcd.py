"""The demo on a 3-member etcd in the underlay netns: one member lost is nothing, a lost
quorum is reported and survived, with the real agents, BIRD and kernel routes."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from fastpath.agent import demo
from fastpath.podnet import cluster as cl
from tests.agent.test_demo_agents import agent_status, bird_routes, wait_for
from tests.conftest import patience, run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def etcd_demo():
    try:
        run_fastpath("up", "--nodes", "2", "--pods", "1", "--datastore", "etcd")
        yield cl.load()
    finally:
        run_fastpath("down", check=False)


def readyz(c, node) -> tuple[int, str]:
    n = c.node(node)
    p = subprocess.run(["ip", "netns", "exec", n.netns, "python3", "-c",
                        "import urllib.request as u, sys\n"
                        "try:\n r = u.urlopen('http://127.0.0.1:9099/readyz', timeout=3); print(r.status); "
                        "print(r.read().decode())\n"
                        "except Exception as e:\n print(getattr(e, 'code', 0)); print(e.read().decode() "
                        "if hasattr(e, 'read') else e)"], capture_output=True, text=True, timeout=10)
    code, _, body = p.stdout.partition("\n")
    return int(code or 0), body


def test_member_loss_then_quorum_loss_then_recovery(etcd_demo):
    c = etcd_demo
    n1, n2 = c.nodes
    etcd = demo.AgentRouting()._etcd(c)
    for m in etcd.members:
        m.pid = int((demo.etcd_dir() / f"{m.name}.pid").read_text())
    assert readyz(c, n1.name)[0] == 200
    # one member down: writes still land and reach every node
    etcd.kill("etcd0")
    # status names the dead member (and is non-zero), though the cluster works on
    p = run_fastpath("status", "--json", check=False, timeout=patience(30))
    st = json.loads(p.stdout)
    dead = f"{etcd.member('etcd0').host}:{etcd.member('etcd0').client_port}"
    assert p.returncode == 1 and not st["health"]["ok"]
    assert [m["ok"] for m in st["health"]["datastore"]["members"]].count(False) == 1
    assert any(x.startswith(f"datastore {dead}:") for x in st["health"]["problems"]), st["health"]
    run_fastpath("service", "add", "web", "--listen", "10.96.0.10:80", "--pods", "node", "--port", "80")
    wait_for(lambda: len(agent_status(n2.name)["services"].get("web", {}).get("backends", [])) == 2,
             patience(15), "the service on node2 with one etcd member down")
    # quorum lost: agents say not ready, and the data plane stays exactly as it was
    routes = {n.name: bird_routes(n.netns) for n in c.nodes}
    etcd.kill("etcd1")
    wait_for(lambda: not agent_status(n1.name)["ready"], patience(15), "node1 to report not-ready")
    code, body = readyz(c, n1.name)
    assert code == 503 and "unreachable" in body, body
    p = run_fastpath("service", "list", check=False, timeout=patience(30))
    assert p.returncode != 0 and "no etcd member answered" in p.stderr
    time.sleep(2)
    assert {n.name: bird_routes(n.netns) for n in c.nodes} == routes
    p = run_fastpath("status", "--json", check=False, timeout=patience(60))
    st = json.loads(p.stdout)
    assert p.returncode == 1
    assert [m["ok"] for m in st["health"]["datastore"]["members"]] == [False, False, False], \
        "a member without quorum was reported healthy"
    assert any(f"node {n1.name}: its agent is not ready" in x for x in st["health"]["problems"])
    chk = json.loads(run_fastpath("check", "--json", check=False).stdout)
    assert chk["ok"], "pods stopped reaching each other while etcd had no quorum"
    # quorum back: the agents recover by themselves
    etcd.restart("etcd0")
    etcd.restart("etcd1")
    wait_for(lambda: agent_status(n1.name)["ready"] and agent_status(n2.name)["ready"], patience(30),
             "the agents to be ready again")
    run_fastpath("service", "del", "web")
    wait_for(lambda: "web" not in agent_status(n1.name)["services"], patience(15),
             "a change after recovery to reach node1")
    _ = signal
