"""The agent's socket: root only, one agent per socket, stale sockets replaced, stopped by
`fastpath down`; and the client's answer when an agent dies mid-request."""

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from fastpath.cni import wire

from .conftest import Agent

pytestmark = pytest.mark.root


def test_socket_is_root_only(instance, tmp_path):
    path = wire.socket_path()  # /run/fastpath/fp-<tag>-agent.sock
    assert path == f"/run/fastpath/fp-{instance}-agent.sock"
    agent = Agent(path, tmp_path / "agent.log")
    agent.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat("/run/fastpath").st_mode) == 0o700
        with open(path + ".pid") as f:
            assert int(f.read()) == agent.proc.pid
        # A second agent on the same socket refuses to start and leaves the first alone.
        p = subprocess.run([sys.executable, "-m", "fastpath", "agent"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode != 0 and "already listens" in p.stderr
        assert os.path.exists(path)
        # Not root: the 0700 directory and 0600 socket keep it out.
        p = subprocess.run([sys.executable, "-c", NOBODY_SENDS, path], capture_output=True,
                           text=True, timeout=30)
        assert "PermissionError" in p.stderr
    finally:
        agent.stop()
    assert not os.path.exists(path) and not os.path.exists(path + ".pid")


NOBODY_SENDS = """
import os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
try:
    s.sendall(b"FPCNI1 0 0 -\\n"); s.shutdown(socket.SHUT_WR); print(repr(s.recv(100)))
except (ConnectionResetError, BrokenPipeError):
    print(repr(b""))
"""


def test_peer_must_be_root(tmp_path):
    """Past the file modes (opened up here on purpose), SO_PEERCRED still turns a
    non-root peer away without an answer."""
    import tempfile
    d = tempfile.mkdtemp(prefix="fp-cni-test-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "agent.sock")
        agent = Agent(path, tmp_path / "agent.log")
        agent.start()
        try:
            os.chmod(path, 0o666)
            p = subprocess.run([sys.executable, "-c", NOBODY_SENDS, path], capture_output=True,
                               text=True, timeout=30)
            assert p.stdout.strip() == "b''", p.stdout + p.stderr
        finally:
            agent.stop()
    finally:
        os.rmdir(d)


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "agent.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # a socket file nobody listens on: a crashed agent's
    agent = Agent(path, tmp_path / "agent.log")
    agent.start()
    try:
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.close()
    finally:
        agent.stop()


def test_down_stops_the_agent(instance, tmp_path, fastpath):
    agent = Agent(wire.socket_path(), tmp_path / "agent.log")
    agent.start()
    try:
        from fastpath.cni import sweep
        removed = sweep.sweep()
        assert f"agent pid {agent.proc.pid}" in removed
        agent.proc.wait(5)
        assert not os.path.exists(agent.socket_path)
        assert sweep.sweep() == []  # idempotent
    finally:
        agent.stop()


def test_client_reports_agent_lost(tmp_path, plugin_dir):
    """An agent that takes a request and dies: the runtime is told to try again later (11)
    and the client does not redo the work itself."""
    path = str(tmp_path / "dying.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()

    def die():
        c, _ = srv.accept()
        c.recv(65536)
        c.close()
    t = threading.Thread(target=die)
    t.start()
    env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "x", "CNI_IFNAME": "eth0",
           "FASTPATH_AGENT_SOCKET": path}
    p = subprocess.run([str(plugin_dir / "fastpath")], env=env, capture_output=True, timeout=30,
                       input=b'{"cniVersion":"1.0.0","name":"n","type":"fastpath","podCIDR":"10.1.0.0/24"}')
    t.join(5)
    srv.close()
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["code"] == 11 and "did not answer" in doc["msg"]


def test_config_names_the_agent(agent_node):
    """`agentSocket` in the config reaches the agent even when the environment says nothing."""
    node = agent_node
    sock, node.agent_socket = node.agent_socket, None
    pod = node.add_pod_netns()
    conf = node.conf(agentSocket=sock)
    a = node.cni("ADD", conf, netns=pod, env={"FASTPATH_CNI_NO_AGENT": ""})
    assert a.rc == 0, a.out
    # The pod's fd went over SCM_RIGHTS: messages name CNI_NETNS, not an fd number.
    node.sh("ip", "route", "del", "default", ns=pod.split("/")[-1])
    c = node.cni("CHECK", {**conf, "prevResult": a.doc}, netns=pod, env={"FASTPATH_CNI_NO_AGENT": ""})
    assert c.doc["code"] == 109 and f"in netns {pod}" in c.doc["details"], c.out
    assert node.cni("DEL", conf, netns=pod, env={"FASTPATH_CNI_NO_AGENT": ""}).rc == 0
