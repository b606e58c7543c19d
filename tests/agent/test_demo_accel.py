"""accel's local map kept by the node agents: each agent adds its own pods' addresses as
CNI adds them and removes them as CNI deletes them (no --local by hand)."""

from __future__ import annotations

import json

import pytest

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
