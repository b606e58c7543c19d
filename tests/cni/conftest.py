"""Fixtures for the CNI plugin's integration tests.

The "node" is a netns fp-<tag>-host that the test creates: the plugin runs inside it
(nsenter --net=), exactly as a runtime on that node would exec it, so nothing is ever
wired in the machine's root netns. Pods are further netns fp-<tag>-pod-N, made by the
test as a runtime makes a sandbox. The plugin is the installed launcher
(`fastpath cni install`), exec'd with the CNI environment and the config on stdin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST_LOCAL = "/usr/lib/cni/host-local"


@dataclass
class Answer:
    rc: int
    out: str
    err: str

    @property
    def doc(self) -> dict:
        return json.loads(self.out) if self.out.strip() else {}


@dataclass
class Node:
    tag: str
    netns: str
    plugin: str
    state_dir: str
    cni_path: str
    agent_socket: str | None = None
    pods: list[str] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def add_pod_netns(self) -> str:
        from fastpath.kernel import netns
        name = f"fp-{self.tag}-pod-{len(self.pods) + 1}"
        netns.create(name)
        self.pods.append(name)
        return f"/run/netns/{name}"

    def conf(self, **over) -> dict:
        doc = {"cniVersion": "1.1.0", "name": "fpnet", "type": "fastpath",
               "podCIDR": "10.123.7.0/24"}
        doc.update(over)
        return {k: v for k, v in doc.items() if v is not None}

    def cni(self, command: str, conf: dict | None = None, *, cid: str = "c1", ifname: str = "eth0",
            netns: str | None = None, env: dict | None = None, stdin: bytes | None = None,
            launcher: str = "native") -> Answer:
        """Exec the plugin as a runtime does, inside the node's netns."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        e.update({"CNI_COMMAND": command, "CNI_PATH": self.cni_path})
        if command not in ("VERSION", "STATUS", "GC"):
            e.update({"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname})
            if netns:
                e["CNI_NETNS"] = netns
        e["FASTPATH_STATE_DIR"] = self.state_dir
        if self.agent_socket:
            e["FASTPATH_AGENT_SOCKET"] = self.agent_socket
            e.pop("FASTPATH_CNI_NO_AGENT", None)
        else:
            e["FASTPATH_CNI_NO_AGENT"] = "1"
        e.update(env or {})
        data = stdin if stdin is not None else json.dumps(conf or self.conf()).encode()
        plugin = self.plugin if launcher == "native" else self.plugin + "-python"
        p = subprocess.run(["nsenter", f"--net={self.netns_path}", plugin], input=data,
                           env=e, capture_output=True, timeout=60)
        return Answer(p.returncode, p.stdout.decode(), p.stderr.decode())

    def sh(self, *argv: str, ns: str | None = None, check: bool = True) -> str:
        p = subprocess.run(["ip", "netns", "exec", ns or self.netns, *argv], capture_output=True,
                           text=True, timeout=30)
        if check and p.returncode != 0:
            raise AssertionError(f"{argv}: {p.stderr}")
        return p.stdout

    def links(self) -> list[str]:
        out = self.sh("ip", "-o", "link", "show")
        return [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines()]

    def leases(self) -> list[tuple[str, str]]:
        from fastpath import state
        from fastpath.podnet.ipam import Ipam
        conn = state.connect(Path(self.state_dir) / state.DB_NAME)
        try:
            return [(str(lease.address), lease.owner) for lease in Ipam(conn).leases()]
        finally:
            conn.close()


class Agent:
    def __init__(self, socket_path: str, log: Path, verbose: bool = False) -> None:
        self.verbose = verbose
        self.socket_path = socket_path
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.logf = open(self.log, "w")
        argv = [sys.executable, "-m", "fastpath", "agent", "--socket", self.socket_path]
        self.proc = subprocess.Popen(argv + (["-v"] if self.verbose else []), stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        # The pidfile is written after bind+listen; a stale socket file proves nothing.
        try:
            with open(self.socket_path + ".pid") as f:
                return int(f.read()) == self.proc.pid
        except (OSError, ValueError):
            return False

    def stop(self) -> str:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.log.read_text()


@pytest.fixture
def plugin_dir(tmp_path) -> Path:
    """`fastpath` (the native launcher) and `fastpath-python` (the python one, which the
    native one execs when no agent answers)."""
    from fastpath.cni.install import install_report
    d = tmp_path / "cni-bin"
    d.mkdir()
    assert install_report(str(d), "fastpath", "native")["launcher"] == "native"
    return d


@pytest.fixture
def node(instance, tmp_path, plugin_dir, state_dir):
    from fastpath.kernel import netns
    name = f"fp-{instance}-host"
    netns.create(name)
    n = Node(tag=instance, netns=name, plugin=str(plugin_dir / "fastpath"), state_dir=str(state_dir),
             cni_path=f"{plugin_dir}:/usr/lib/cni")
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    try:
        yield n
    finally:
        for p in n.pods:
            netns.delete(p)
        netns.delete(name)


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory):
    """One agent for a test module: each request carries its own instance and state dir."""
    d = tmp_path_factory.mktemp("agent")
    agent = Agent(str(d / "agent.sock"), d / "agent.log")
    agent.start()
    try:
        yield agent
    finally:
        log = agent.stop()
        assert "stopped after" in log and "stopped after 0 requests" not in log, log


@pytest.fixture(params=["agent", "in-process"])
def anynode(request, node):
    """The node, with the plugin talking to an agent, or doing the work itself."""
    if request.param == "agent":
        node.agent_socket = request.getfixturevalue("shared_agent").socket_path
    yield node


@pytest.fixture
def agent_node(node, shared_agent):
    node.agent_socket = shared_agent.socket_path
    yield node
