"""Node agents in the demo cluster, one per node netns, with the real datastore, BIRD,
CNI and kernel: confinement, quiet restarts, a node that dies, bad starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fastpath import naming
from fastpath.agent import demo
from fastpath.cluster.store import ClusterStore
from fastpath.kernel import netns, proc
from fastpath.podnet import cluster as cl
from tests.conftest import patience, run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def down():
    yield
    run_fastpath("down", check=False)


@pytest.fixture
def two_nodes(down):
    run_fastpath("up", "--nodes", "2", "--pods", "1")
    return cl.load()


def agent_status(node: str) -> dict:
    p = run_fastpath("status", "--node", node, "--json", check=False)
    return json.loads(p.stdout)


def bird_routes(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "route", "show", "proto", "bird"], capture_output=True,
                         text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")


def test_each_agent_stays_inside_its_own_node(two_nodes):
    c = two_nodes
    dirs = {n.name: str(demo.node_state_dir(n.name)) for n in c.nodes}
    for n in c.nodes:
        pid = demo.agent_pid(n.name)
        assert pid, f"no agent for {n.name}"
        bird_pid = demo.AgentRouting()._bird_pid(n.name)
        with netns.Netns.open(n.netns) as ns:
            want = ns.inode()
        for p in (pid, bird_pid):
            st = os.stat(f"/proc/{p}/ns/net")
            assert (st.st_dev, st.st_ino) == want, f"pid {p} of {n.name} is not in {n.netns}"
            env = dict(kv.split("=", 1) for kv in
                       open(f"/proc/{p}/environ", "rb").read().decode().split("\0") if "=" in kv)
            if p == pid:
                assert env["FASTPATH_STATE_DIR"] == dirs[n.name]
            others = [d for name, d in dirs.items() if name != n.name]
            opened = [os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")]
            opened += open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace").split("\0")
            leaks = [f for f in opened if any(f.startswith(o) for o in others)]
            assert not leaks, f"{n.name}'s process {p} holds another node's files: {leaks}"
    # each node learned the other's pod CIDR through BGP, from the datastore alone
    assert bird_routes(c.nodes[0].netns) == {c.nodes[1].pod_cidr}
    assert bird_routes(c.nodes[1].netns) == {c.nodes[0].pod_cidr}


def _pod_pair(c):
    """A TCP connection from node1's pod to node2's pod (sockets made in the pods' netns)."""
    a, b = c.pods_on(c.nodes[0].name)[0], c.pods_on(c.nodes[1].name)[0]
    srv = netns.run_in(b.netns, socket.create_server, (b.ip, 7000))
    cli = netns.run_in(a.netns, socket.create_connection, (b.ip, 7000), 5)
    conn, _ = srv.accept()
    srv.close()
    return cli, conn


def _roundtrip(cli, conn, n: int) -> None:
    msg = f"ping {n}".encode()
    cli.sendall(msg)
    conn.settimeout(5)
    assert conn.recv(100) == msg


def test_agent_kill9_and_restart_drop_nothing(two_nodes):
    c = two_nodes
    n1 = c.nodes[0]
    r = demo.AgentRouting()
    before = agent_status(n1.name)
    bird_pid = r._bird_pid(n1.name)
    since = {s["protocol"]: s["since"] for s in before["sessions"]}
    assert since and all(since.values())
    cli, conn = _pod_pair(c)
    _roundtrip(cli, conn, 0)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: not proc.alive(before["pid"]), 5, "the agent to die")
    _roundtrip(cli, conn, 1)                      # the data plane does not need the agent
    assert bird_routes(n1.netns) == {c.nodes[1].pod_cidr}
    r.start_agent(n1)
    r.wait_ready(c, [n1.name], timeout=patience(15, starts=1))
    after = agent_status(n1.name)
    assert after["pid"] != before["pid"]
    assert after["lease"] == before["lease"], "the restarted agent took a new lease"
    assert r._bird_pid(n1.name) == bird_pid, "BIRD was restarted"
    assert {s["protocol"]: s["since"] for s in after["sessions"]} == since, "a BGP session was reset"
    _roundtrip(cli, conn, 2)
    with ClusterStore.open() as cs:
        assert n1.name in cs.view().alive
    cli.close()
    conn.close()


def test_a_stopped_node_leaves_routes_and_services(two_nodes):
    c = two_nodes
    n1, n2 = c.nodes
    run_fastpath("service", "add", "web", "--listen", "10.96.0.10:80", "--pods", "node", "--port", "80")
    both = wait_for(lambda: len(agent_status(n1.name)["services"].get("web", {}).get("backends", [])) == 2,
                    10, "both pods in node1's service table")
    assert both
    r = demo.AgentRouting()
    # the link first, so no FIN or RST of the dying processes reaches anyone: as a power cut
    subprocess.run(["ip", "-n", c.underlay_netns, "link", "set", n2.bridge_port, "down"], check=True)
    t0 = time.monotonic()
    for pid in (demo.agent_pid(n2.name), r._bird_pid(n2.name)):
        os.kill(pid, signal.SIGKILL)
    budget = demo.LEASE_TTL + 3 + 2   # lease TTL + BGP hold time + slack for the sweep and polling
    wait_for(lambda: n2.pod_cidr not in bird_routes(n1.netns), patience(budget), "the route to withdraw")
    routes_s = time.monotonic() - t0
    mine = [f"{p.ip}:80" for p in c.pods_on(n1.name)]
    wait_for(lambda: agent_status(n1.name)["services"]["web"]["backends"] == mine,
             patience(budget), "node2's pod to leave the service")
    svc_s = time.monotonic() - t0
    print(f"node stopped: route withdrawn after {routes_s:.1f}s, service endpoint after {svc_s:.1f}s")
    with ClusterStore.open() as cs:
        assert n2.name not in cs.view().alive


def test_a_clashing_agent_is_refused_before_it_writes(two_nodes, tmp_path):
    c = two_nodes
    with ClusterStore.open() as cs:
        rev = cs.kv.revision()
    cases = [
        (["--node", "node1", "--address", "10.255.0.9/24", "--pod-cidr", "10.244.9.0/24"],
         "node node1 is already registered by a live agent"),
        (["--node", "node9", "--address", "10.255.0.9/24", "--pod-cidr", c.nodes[0].pod_cidr],
         f"pod CIDR {c.nodes[0].pod_cidr} of node node9 is node node1's"),
        (["--node", "node9", "--address", "10.255.0.9/24", "--pod-cidr", "10.244.9.0/24",
          "--router-id", c.nodes[1].router_id], f"router id {c.nodes[1].router_id} of node node9"),
    ]
    for args, msg in cases:
        p = run_fastpath("agent", *args, "--no-bird", "--health", "", "--socket",
                         str(tmp_path / "cni.sock"), check=False, timeout=patience(20))
        assert p.returncode == 2, p.stderr
        assert msg in p.stderr and p.stderr.count("\n") == 1, p.stderr
    with ClusterStore.open() as cs:
        assert cs.kv.revision() == rev, "a refused agent wrote to the datastore"
    assert not (tmp_path / "cni.sock").exists()


def test_an_unreachable_datastore_is_retried_with_one_line_each(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]    # closed once the block ends: nothing listens there
    sock = tmp_path / "cni.sock"
    p = subprocess.Popen([sys.executable, "-m", "fastpath", "agent", "--node", "node1", "--datastore",
                          f"etcd://127.0.0.1:{port}", "--address", "10.255.0.1/24", "--no-bird",
                          "--health", "", "--socket", str(sock)],
                         stderr=subprocess.PIPE, text=True, env={**os.environ})
    time.sleep(patience(3.5))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=patience(5))
    lines = [x for x in err.splitlines() if "unreachable" in x]
    assert p.returncode == 0, err
    assert len(lines) >= 2, err
    assert all("retrying in" in x and "data plane is left as it is" in x for x in lines), err
    waits = [float(x.split("retrying in ")[1].split("s")[0]) for x in lines]
    assert waits == sorted(waits) and waits[0] < waits[-1], f"no backoff: {waits}"
    assert "Traceback" not in err and not sock.exists()
    _ = naming  # the instance scope the fixture set
