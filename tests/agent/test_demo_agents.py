"""Node agents in the demo cluster, one per node netns, with the real datastore, BIRD,
CNI and kernel: confinement, quiet restarts (by the supervisor and by hand), an agent
dead for longer than its lease (no data-plane outage, and a status that says so), a node
that dies, bad starts."""

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
from fastpath.bgp import bird
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


def alive_nodes() -> set[str]:
    with ClusterStore.open() as cs:
        return set(cs.view().alive)


def cluster_status() -> tuple[int, dict]:
    p = run_fastpath("status", "--json", check=False)
    return p.returncode, json.loads(p.stdout)


def kill_agent_held_down(node: str) -> tuple[int, int]:
    """kill -9 of the node's agent with its supervisor stopped (SIGSTOP), so the agent
    stays dead until the caller lets the supervisor go on; (agent pid, supervisor pid)."""
    sup = demo.supervisor_pid(node)
    pid = demo.agent_pid(node)
    assert sup and pid and sup != pid, f"node {node}: supervisor {sup}, agent {pid}"
    os.kill(sup, signal.SIGSTOP)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive(pid), 5, "the agent to die")
    return pid, sup


def sessions_since(st: dict) -> dict:
    return {s["protocol"]: s["since"] for s in st["sessions"]}


def test_agent_kill9_and_restart_drop_nothing(two_nodes):
    c = two_nodes
    n1 = c.nodes[0]
    r = demo.AgentRouting()
    before = agent_status(n1.name)
    bird_pid = r._bird_pid(n1.name)
    since = sessions_since(before)
    assert since and all(since.values())
    cli, conn = _pod_pair(c)
    _roundtrip(cli, conn, 0)
    os.kill(before["pid"], signal.SIGKILL)
    _roundtrip(cli, conn, 1)                      # the data plane does not need the agent
    assert bird_routes(n1.netns) == {c.nodes[1].pod_cidr}
    # the supervisor brings it back, as systemd's Restart= would
    after = r.wait_restarted(c, n1.name, before["pid"], patience(15, starts=1))
    assert after["pid"] != before["pid"]
    assert after["lease"] == before["lease"], "the restarted agent took a new lease"
    assert r._bird_pid(n1.name) == bird_pid, "BIRD was restarted"
    assert sessions_since(agent_status(n1.name)) == since, "a BGP session was reset"
    _roundtrip(cli, conn, 2)
    with ClusterStore.open() as cs:
        assert n1.name in cs.view().alive
    cli.close()
    conn.close()


@pytest.mark.parametrize("shape", ["mesh", "reflector"])
def test_an_agent_dead_past_its_lease_cuts_nothing_off(down, shape):
    """kill -9 of an agent, held dead for 3x the lease TTL (the supervisor stopped): every
    pod still reaches every pod, status is non-zero and names the dead agent (its JSON
    agrees with its tables), and the supervisor then brings the agent back with no BGP
    session reset. With a route reflector, the reflector's own agent dies."""
    extra = ["--nodes", "3", "--route-reflector", "node1"] if shape == "reflector" else ["--nodes", "2"]
    run_fastpath("up", "--pods", "1", *extra)
    c = cl.load()
    victim = c.nodes[0] if shape == "reflector" else c.nodes[1]
    r = demo.AgentRouting()
    since = {n.name: sessions_since(agent_status(n.name)) for n in c.nodes}
    birds = {n.name: r._bird_pid(n.name) for n in c.nodes}
    pid, sup = kill_agent_held_down(victim.name)
    try:
        deadline = time.monotonic() + 3 * demo.LEASE_TTL + 1
        checks = 0
        while time.monotonic() < deadline:
            chk = json.loads(run_fastpath("check", "--json", check=False).stdout)
            assert chk["ok"], f"pods cut off while {victim.name}'s agent is dead: {chk}"
            checks += 1
            time.sleep(1)
        with ClusterStore.open() as cs:
            assert victim.name not in cs.view().alive, "the dead agent's lease did not run out"
        code, st = cluster_status()
        assert code == 1, "status exited 0 with a dead agent"
        assert not st["health"]["ok"]
        assert any(f"node {victim.name}: its agent is not running" in p for p in st["health"]["problems"]), \
            st["health"]["problems"]
        assert st["routes"][victim.name]["agent_pid"] is None      # the table says the same
        assert all(not v["missing"] for v in st["routes"].values())  # and no route went
        dead = agent_status(victim.name)
        assert not dead["ready"] and not dead["running"]
        other = next(n for n in c.nodes if n != victim)
        assert [d["node"] for d in agent_status(other.name)["dead_nodes"]] == [victim.name]
    finally:
        os.kill(sup, signal.SIGCONT)
    back = r.wait_restarted(c, victim.name, pid, patience(15, starts=1))
    assert back["ready"]
    assert {n.name: r._bird_pid(n.name) for n in c.nodes} == birds, "a BIRD was restarted"
    for n in c.nodes:
        assert sessions_since(agent_status(n.name)) == since[n.name], f"a session of {n.name} was reset"
    wait_for(lambda: cluster_status()[0] == 0, patience(10), "status to be healthy again")
    print(f"{shape}: {checks} checks passed with {victim.name}'s agent dead for "
          f"{3 * demo.LEASE_TTL}s")


def test_a_restart_by_hand_finds_the_node_from_its_bird(two_nodes):
    """The agent's own command line, run by hand without its state dir or instance (in
    the flags or the environment), inside its node: it finds its state from the node's
    running BIRD, takes over the dead agent's lease, and starts no second BIRD."""
    c = two_nodes
    n1 = c.nodes[0]
    r = demo.AgentRouting()
    before = agent_status(n1.name)
    bird_pid = r._bird_pid(n1.name)
    since = sessions_since(before)
    argv = open(f"/proc/{before['pid']}/cmdline", "rb").read().decode().split("\0")[:-1]
    for flag in ("--state-dir", "--instance"):
        i = argv.index(flag)
        del argv[i:i + 2]
    sup = demo.supervisor_pid(n1.name)
    os.kill(sup, signal.SIGKILL)       # no supervisor: this is the operator's own restart
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: not proc.alive(before["pid"]), 5, "the agent to die")
    env = {k: v for k, v in os.environ.items() if k not in ("FASTPATH_STATE_DIR", "FASTPATH_INSTANCE")}
    log = open(demo.node_state_dir(n1.name) / "by-hand.log", "wb")
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{n1.netns}", *argv], env=env,
                         stdout=log, stderr=log, start_new_session=True)
    try:
        after = wait_for(lambda: (lambda st: st if st and st["pid"] == p.pid and st["ready"] else None)(
            demo.read_node_status(n1.name)), patience(20, starts=1), "the hand-started agent to be ready")
        assert after["lease"] == before["lease"], "the hand-started agent took a new lease"
        assert r._bird_pid(n1.name) == bird_pid, "BIRD was restarted"
        ino = os.stat(f"/run/netns/{n1.netns}").st_ino
        assert len(bird.running_here(ino)) == 1, "a second BIRD runs in the node"
        assert sessions_since(agent_status(n1.name)) == since, "a BGP session was reset"
        text = (demo.node_state_dir(n1.name) / "by-hand.log").read_text()
        assert "found from its running BIRD" in text and "already registered" not in text, text
    finally:
        p.terminate()
        p.wait(timeout=patience(10))
        log.close()


def test_a_stopped_node_is_withdrawn_by_bgp_and_leaves_services_on_node_del(two_nodes):
    c = two_nodes
    n1, n2 = c.nodes
    run_fastpath("service", "add", "web", "--listen", "10.96.0.10:80", "--pods", "node", "--port", "80")
    both = sorted(f"{p.ip}:80" for p in c.pods)
    wait_for(lambda: agent_status(n1.name)["services"].get("web", {}).get("backends") == both,
             10, "both pods in node1's service table")
    r = demo.AgentRouting()
    # the link first, so no FIN or RST of the dying processes reaches anyone: as a power cut
    subprocess.run(["ip", "-n", c.underlay_netns, "link", "set", n2.bridge_port, "down"], check=True)
    t0 = time.monotonic()
    for pid in (demo.supervisor_pid(n2.name), demo.agent_pid(n2.name), r._bird_pid(n2.name)):
        os.kill(pid, signal.SIGKILL)
    budget = 3 + 2   # the BGP hold time + slack for polling: BGP withdraws, not the lease
    wait_for(lambda: n2.pod_cidr not in bird_routes(n1.netns), patience(budget), "the route to withdraw")
    routes_s = time.monotonic() - t0
    wait_for(lambda: n2.name not in alive_nodes(), patience(demo.LEASE_TTL + 2),
             "node2's lease to run out")
    # its pod stays a backend (the proxy's health checks judge it) until node del
    time.sleep(1)
    assert agent_status(n1.name)["services"]["web"]["backends"] == both
    code, st = cluster_status()
    assert code == 1 and any("node node2: its agent is not running" in x for x in st["health"]["problems"])
    run_fastpath("node", "del", n2.name)
    mine = [f"{p.ip}:80" for p in c.pods_on(n1.name)]
    wait_for(lambda: agent_status(n1.name)["services"]["web"]["backends"] == mine,
             patience(5), "node2's pod to leave the service")
    print(f"node stopped: route withdrawn by BGP after {routes_s:.1f}s")


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


def test_the_bgp_commands_work_on_the_agents_birds(two_nodes):
    c = two_nodes
    n1, n2 = c.nodes
    p = run_fastpath("bgp", "sessions", "--json")
    d = json.loads(p.stdout)
    assert p.returncode == 0 and d["topology"] == "full mesh"
    assert {k: [s["peer"] for s in v] for k, v in d["nodes"].items()} == {n1.name: [n2.name],
                                                                          n2.name: [n1.name]}
    s = d["nodes"][n1.name][0]
    assert s["established"] and s["uptime_s"] > 0 and s["imported"] == 1 and s["exported"] == 1
    one = json.loads(run_fastpath("bgp", "sessions", n2.name, "--json").stdout)
    assert list(one["nodes"]) == [n2.name]
    text = run_fastpath("bgp", "config", n1.name).stdout
    assert text == bird.BirdPaths.under(demo.node_state_dir(n1.name), n1.name).conf.read_text()
    assert f"protocol bgp fp_peer_{n2.name}" in text
    # the status table shows what BIRD says, uptime and route counts included
    st = json.loads(run_fastpath("status", "--json").stdout)
    assert st["routes"][n1.name]["sessions"][0]["imported"] == 1
    # BIRD killed: its agent starts it again; `bgp start` waits for that and for the routes
    # (the agent is held with SIGSTOP until `bgp start` is waiting, or it would be quicker)
    r = demo.AgentRouting()
    agent = demo.agent_pid(n1.name)
    os.kill(agent, signal.SIGSTOP)
    try:
        os.kill(r._bird_pid(n1.name), signal.SIGKILL)
        wait_for(lambda: not r._bird_pid(n1.name), 5, "BIRD to die")
        start = subprocess.Popen([sys.executable, "-m", "fastpath", "bgp", "start", "--json"],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(patience(1.5))
    finally:
        os.kill(agent, signal.SIGCONT)
    out, _ = start.communicate(timeout=patience(30))
    d = json.loads(out)
    assert start.returncode == 0 and d["started"] == [n1.name] and d["converged_s"] is not None, d
    assert bird_routes(n1.netns) == {n2.pod_cidr}
    bad = run_fastpath("bgp", "sessions", "node9", check=False)
    assert bad.returncode == 2 and "node node9 does not exist" in bad.stderr


def test_a_service_on_a_node_without_a_proxy_is_not_shown_as_served(two_nodes):
    c = two_nodes
    n1 = c.nodes[0]
    run_fastpath("service", "add", "web", "--listen", "10.96.0.20:80", "--pods", "node", "--port", "80")
    st = wait_for(lambda: (lambda s: s if "web" in s["services"] else None)(agent_status(n1.name)),
                  patience(10), "the service in node1's table")
    assert st["served"]["web"] == "not served: no proxy on this node"
    text = run_fastpath("status", "--node", n1.name).stdout
    assert "service web 10.96.0.20:80" in text and "(not served: no proxy on this node)" in text, text
