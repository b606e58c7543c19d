"""accel's local map kept by the node agents: each agent adds its own pods' addresses as
CNI adds them and removes them as CNI deletes them (no --local by hand), and reconciles
the set on start (what went stale while it was down leaves); node add and del bring and
take a node's prefixes."""

from __future__ import annotations

import json
import os
import signal

import pytest

from fastpath.agent import demo
from tests.agent.test_demo_agents import wait_for
from tests.conftest import patience, run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def accel_demo():
    try:
        out = json.loads(run_fastpath("up", "--nodes", "2", "--pods", "1", "--accel", "--json").stdout)
        assert out["accel"].get("enabled") is not False and out["accel"]["sockops_prog_id"], out["accel"]
        yield out
    finally:
        run_fastpath("down", check=False)


def local() -> set[str]:
    return set(json.loads(run_fastpath("accel", "local", "--json").stdout)["local"])


def test_agents_keep_accels_local_map(accel_demo):
    pods = {p["name"]: p["ip"] for p in accel_demo["pods"]}
    wait_for(lambda: {f"{ip}/32" for ip in pods.values()} <= local(), patience(10),
             "every pod's address in the local map")
    new = json.loads(run_fastpath("pod", "add", "node2", "--json").stdout)
    wait_for(lambda: f"{new['ip']}/32" in local(), patience(10), "the new pod in the local map")
    run_fastpath("pod", "del", new["name"])
    wait_for(lambda: f"{new['ip']}/32" not in local(), patience(10), "the deleted pod to leave it")
    assert {"10.255.0.1/32", "10.255.0.2/32"} <= local()   # and the nodes' own addresses


def test_the_local_set_is_reconciled_not_only_added_to(accel_demo):
    # a /32 in node2's block that no pod has (as one deleted while its agent was down)
    run_fastpath("accel", "local", "--add", "10.244.2.99/32")
    pid = demo.agent_pid("node2")
    os.kill(pid, signal.SIGKILL)   # its supervisor starts it again, and it reconciles
    wait_for(lambda: "10.244.2.99/32" not in local(), patience(20, starts=1),
             "the restarted agent to remove the stale /32")
    assert "10.244.1.0/24" in local() and "10.255.0.1/32" in local()   # not node2's: kept
    # node add brings the node's block and address, node del takes them and its pods' /32s
    n3 = json.loads(run_fastpath("node", "add", "--json").stdout)
    assert {n3["pod_cidr"], f"{n3['underlay_ip']}/32"} <= local()
    pod = json.loads(run_fastpath("pod", "add", n3["name"], "--json").stdout)
    wait_for(lambda: f"{pod['ip']}/32" in local(), patience(10), "node3's pod in the local map")
    run_fastpath("node", "del", n3["name"])
    left = {x for x in local() if x in (n3["pod_cidr"], f"{n3['underlay_ip']}/32", f"{pod['ip']}/32")}
    assert not left, f"node del left {left} in the local set"
    # removing what is not there says so
    p = run_fastpath("accel", "local", "--remove", "10.9.9.0/24", check=False)
    assert p.returncode == 1 and "10.9.9.0/24 was not in the local set" in p.stdout, p.stdout
