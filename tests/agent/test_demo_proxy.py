"""Node proxies programmed by their agents through an RCU table: services from the
datastore reach the proxies with no file and no signal, and an agent's restart keeps the
proxy, its listeners and its connections."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from fastpath.agent import demo
from fastpath.kernel import netns, proc
from fastpath.podnet import cluster as cl
from tests.agent.test_demo_agents import agent_status, wait_for
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


def echo_server(pod, port: int) -> socket.socket:
    srv = netns.run_in(pod.netns, socket.create_server, (pod.ip, port))

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


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
    demo.AgentRouting().start_agent(n1)
    demo.AgentRouting().wait_ready(c, [n1.name], timeout=patience(15, starts=1))
    after = agent_status(n1.name)
    assert after["proxy_pid"] == proxy_pid, "the restarted agent started another proxy"
    roundtrip(conn, 2)
    # the adopted proxy follows the new agent's table
    run_fastpath("service", "add", "echo2", "--listen", "10.96.0.21:9000", "--backend",
                 f"{server_pod.ip}:9000")
    conn2 = connect_via(client_pod, "10.96.0.21", 9000)
    roundtrip(conn2, 3)
    roundtrip(conn, 4)
    # a deleted service takes its VIP with it
    run_fastpath("service", "del", "echo2")
    wait_for(lambda: "10.96.0.21" not in vips(n1.netns), patience(5), "the VIP to go")
    for s in (conn, conn2, srv):
        s.close()
    time.sleep(0)
