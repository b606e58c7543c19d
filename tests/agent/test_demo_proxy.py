"""Node proxies programmed by their agents through an RCU table: services from the
datastore reach the proxies with no file and no signal, and an agent's restart keeps the
proxy, its listeners and its connections."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from fastpath.agent import demo, servicetable
from fastpath.kernel import netns, proc
from fastpath.podnet import cluster as cl
from tests.agent.test_demo_agents import agent_status, wait_for
from tests.agent.test_demo_etcd import readyz
from tests.conftest import patience, run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def proxy_demo():
    try:
        out = json.loads(run_fastpath("up", "--nodes", "2", "--pods", "1", "--proxy", "--json").stdout)
        assert out["proxy"]["ok"], out["proxy"]
        yield cl.load()
    finally:
        run_fastpath("down", check=False)


def pod_server(pod, port: int, handler) -> socket.socket:
    """A server made in the pod's netns; `handler(conn)` runs per connection in a thread."""
    srv = netns.run_in(pod.netns, socket.create_server, (pod.ip, port))

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def echo_server(pod, port: int) -> socket.socket:
    return pod_server(pod, port, _echo)


def _echo(c: socket.socket) -> None:
    with c:
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass   # the proxy's health checks connect and reset


def connect_via(pod, vip: str, port: int) -> socket.socket:
    def attempt():
        try:
            return netns.run_in(pod.netns, socket.create_connection, (vip, port), 2)
        except OSError:
            return None
    return wait_for(attempt, patience(10), f"{vip}:{port} to accept from {pod.name}", step=0.1)


def roundtrip(s: socket.socket, n: int) -> None:
    msg = f"through the proxy {n}".encode()
    s.sendall(msg)
    s.settimeout(5)
    got = b""
    while len(got) < len(msg):
        got += s.recv(100)
    assert got == msg


def vips(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if "lo:fpvip" in line}


def test_services_program_the_proxies_and_survive_an_agent_restart(proxy_demo):
    c = proxy_demo
    n1, n2 = c.nodes
    client_pod, server_pod = c.pods_on(n1.name)[0], c.pods_on(n2.name)[0]
    srv = echo_server(server_pod, 9000)
    run_fastpath("service", "add", "echo", "--listen", "10.96.0.20:9000", "--backend",
                 f"{server_pod.ip}:9000")
    conn = connect_via(client_pod, "10.96.0.20", 9000)
    roundtrip(conn, 0)
    assert "10.96.0.20" in vips(n1.netns)
    before = agent_status(n1.name)
    proxy_pid = before["proxy_pid"]
    assert proxy_pid and proc.alive(proxy_pid)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: not proc.alive(before["pid"]), 5, "the agent to die")
    roundtrip(conn, 1)          # the proxy does not need its agent to forward
    # its supervisor starts it again
    demo.AgentRouting().wait_restarted(c, n1.name, before["pid"], patience(15, starts=1))
    after = agent_status(n1.name)
    assert after["proxy_pid"] == proxy_pid, "the restarted agent started another proxy"
    roundtrip(conn, 2)
    # the adopted proxy follows the new agent's table
    run_fastpath("service", "add", "echo2", "--listen", "10.96.0.21:9000", "--backend",
                 f"{server_pod.ip}:9000")
    conn2 = connect_via(client_pod, "10.96.0.21", 9000)
    roundtrip(conn2, 3)
    roundtrip(conn, 4)
    # a deleted service takes its VIP with it, once its connection has drained
    run_fastpath("service", "del", "echo2")
    time.sleep(patience(2.5))
    assert "10.96.0.21" in vips(n1.netns), "the VIP went while conn2 still used it"
    roundtrip(conn2, 5)          # the established connection still has its path
    conn2.close()
    wait_for(lambda: "10.96.0.21" not in vips(n1.netns), patience(8), "the VIP to go")
    for s in (conn, srv):
        s.close()
    time.sleep(0)


def agent_pids(c) -> dict[str, int]:
    return {n.name: agent_status(n.name)["pid"] for n in c.nodes}


def reply_from(pod, vip: str, port: int = 80) -> bytes:
    s = connect_via(pod, vip, port)
    with s:
        s.settimeout(5)
        s.sendall(b"hi\n")
        return s.recv(100)


def test_an_idle_proxy_never_stalls_its_agent(proxy_demo):
    """The demo with node proxies, idle for longer than the table's stall bound, then more
    changes than the table has version buffers (services and pods): every agent stays up
    and ready, every change is programmed on every node, and a pod reaches each new VIP."""
    c = proxy_demo
    pids = agent_pids(c)
    client = c.pods_on(c.nodes[0].name)[0]
    time.sleep(patience(4))     # > the 2 s stall bound: an online-but-idle reader blocks now
    t0 = time.monotonic()
    vips_made = []
    for i in range(1, 7):
        vip = f"10.96.1.{i}"
        run_fastpath("service", "add", f"s{i}", "--listen", f"{vip}:80", "--pods", "node", "--port",
                     "8080")
        vips_made.append(vip)
        if i % 2 == 0:
            run_fastpath("pod", "add", c.nodes[i % 2].name, f"extra{i}")
            run_fastpath("pod", "del", f"extra{i}")
    run_fastpath("service", "del", "s1")
    want = {f"s{i}" for i in range(2, 7)} | {"demo"}
    for n in c.nodes:
        # within the programming bound: a stalled table would only come back after the
        # agent replaced it (servicetable.REPLACE_AFTER), which is a failure here
        wait_for(lambda n=n: set(agent_status(n.name)["services"]) == want and agent_status(n.name)["ready"],
                 patience(3), f"node {n.name} to program every change")
    took = time.monotonic() - t0
    assert agent_pids(c) == pids, "an agent died (or was restarted) under the changes"
    for n in c.nodes:
        st = agent_status(n.name)
        assert st["table"] == {"generation": 1, "replaced": 0, "pending": False}, \
            f"node {n.name}'s proxy stalled the service table: {st['table']}"
    for vip in vips_made[1:]:
        assert reply_from(client, vip).startswith(b"node"), vip
    print(f"12 changes after idle programmed on every node in {took:.1f}s")


HUNG_READER = r"""
import os, sys
from fastpath.rcu.table import SharedTable
fd = os.open(sys.argv[1], os.O_RDWR)
t = SharedTable.attach(fd)       # online, and never quiescent again
print("online", flush=True)
sys.stdin.readline()
"""


def _table_fd(pid: int) -> str:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "rcu-agent-services" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return f"/proc/{pid}/fd/{fd}"
        except OSError:
            continue
    raise AssertionError(f"agent {pid} holds no service table")


def test_a_hung_table_reader_costs_the_agent_nothing(proxy_demo):
    """A reader that attaches to the agent's own service table and never reports: the
    agent keeps every duty, /readyz names the reader while a change waits, and once the
    reader is hung beyond the bound the agent hands its proxy a fresh table, so the
    changes reach the proxy and a pod reaches the new VIPs."""
    c = proxy_demo
    n1 = c.nodes[0]
    pid = agent_status(n1.name)["pid"]
    hung = subprocess.Popen(["nsenter", f"--net=/run/netns/{n1.netns}", sys.executable, "-c",
                             HUNG_READER, _table_fd(pid)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout is not None and hung.stdout.readline().strip() == "online"
        for i in range(1, 7):    # more publishes than the table's version buffers
            run_fastpath("service", "add", f"h{i}", "--listen", f"10.96.2.{i}:80", "--pods", "node",
                         "--port", "8080")
        code, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(readyz(c, n1.name)),
                              patience(5), "node1's /readyz to report the stall")
        assert f"pid {hung.pid}" in body and "grace period" in body, body
        def replaced():
            s = agent_status(n1.name)
            new = [k for k in s["services"] if k.startswith("h")]
            return s if s["ready"] and len(new) == 6 and s["table"]["replaced"] >= 1 else None
        st = wait_for(replaced, patience(servicetable.REPLACE_AFTER + 10), "the table to be replaced")
        assert st["pid"] == pid, "the agent died of a hung reader"
        assert readyz(c, n1.name)[0] == 200
        client = c.pods_on(n1.name)[0]
        assert reply_from(client, "10.96.2.6").startswith(b"node")
    finally:
        hung.kill()
        hung.wait()


def slow_streamer(pod, port: int) -> socket.socket:
    """A backend in `pod` that streams 64 KiB every 10 ms to each client until it goes."""
    def stream(c: socket.socket) -> None:
        with c:
            try:
                for _ in range(100_000):   # bounded; the client ends it long before
                    c.sendall(b"s" * 65536)
                    time.sleep(0.01)
            except OSError:
                pass
    return pod_server(pod, port, stream)


def test_a_deleted_service_drains_then_its_vip_goes(proxy_demo):
    """service del: new connections are refused at once, an established one keeps its VIP
    and its path and goes on receiving, and the VIP leaves the loopback only once that
    connection has ended."""
    c = proxy_demo
    n1 = c.nodes[0]
    client_pod, server_pod = c.pods_on(n1.name)[0], c.pods_on(c.nodes[1].name)[0]
    srv = slow_streamer(server_pod, 9300)
    run_fastpath("service", "add", "s87", "--listen", "10.96.0.50:80", "--backend",
                 f"{server_pod.ip}:9300")
    conn = connect_via(client_pod, "10.96.0.50", 80)
    conn.settimeout(5)
    got = 0
    while got < 1 << 20:
        got += len(conn.recv(1 << 16))
    run_fastpath("service", "del", "s87")

    def refused():
        try:
            netns.run_in(client_pod.netns, socket.create_connection, ("10.96.0.50", 80), 1).close()
            return False
        except OSError:
            return True
    wait_for(refused, patience(5), "the deleted service to refuse new connections")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:   # the established one goes on, and keeps its VIP
        got += len(conn.recv(1 << 16))
    assert "10.96.0.50" in vips(n1.netns), "the VIP left while a connection still used it"
    st = agent_status(n1.name)
    assert "s87" not in st["services"] and st["draining"].get("10.96.0.50", 0) >= 1, st["draining"]
    text = run_fastpath("status", "--node", n1.name).stdout
    assert "draining: 1 connections on 10.96.0.50" in text, text
    conn.close()
    wait_for(lambda: "10.96.0.50" not in vips(n1.netns), patience(8), "the VIP to leave once drained")
    assert agent_status(n1.name)["draining"] == {}
    srv.close()
    print(f"drained: {got >> 20} MiB received after the delete, then the VIP went")
