"""End to end: podman (Debian's 4.3, CNI backend, runc) inside a demo node's netns runs a
container whose network comes from fastpath; the container reaches a pod on the other node
and that pod sees the container's own address. Everything is made under a temp dir (podman
storage, CNI config and plugin dir) and removed afterwards."""

import ipaddress
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import require

pytestmark = [pytest.mark.root, pytest.mark.slow]

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); s.settimeout(60)
print("ready", flush=True)
c, a = s.accept(); c.sendall(("peer=%s\\n" % a[0]).encode()); c.close()
"""


def _need(*programs):
    for p in programs:
        require(shutil.which(p) is not None or os.path.exists(p),
                f"{p} is not installed (scripts/install-system-packages.sh)")


@pytest.fixture
def cluster(fastpath):
    fastpath("up", "--nodes", "2", "--pods", "1")
    try:
        yield json.loads(fastpath("status", "--json").stdout)
    finally:
        fastpath("down")


@pytest.fixture
def podman_env(tmp_path, instance, state_dir):
    _need("podman", "runc", "/bin/busybox")
    from fastpath.cni.install import install_report
    t = tmp_path / "podman"
    for d in ("cni-bin", "cni-conf", "rootfs/bin", "tmp"):
        (t / d).mkdir(parents=True)
    install_report(str(t / "cni-bin"), "fastpath", "auto")
    (t / "containers.conf").write_text(f"""
[network]
network_backend = "cni"
cni_plugin_dirs = ["{t}/cni-bin", "/usr/lib/cni"]
network_config_dir = "{t}/cni-conf"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{t}/events.log"
tmp_dir = "{t}/tmp"
""")
    (t / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
graphroot = "{t}/root"
runroot = "{t}/runroot"
""")
    shutil.copy("/bin/busybox", t / "rootfs/bin/busybox")
    for applet in ("sh", "ip", "nc", "cat"):
        os.symlink("busybox", t / "rootfs/bin" / applet)
    env = {**os.environ, "CONTAINERS_CONF": str(t / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(t / "storage.conf")}
    tar = subprocess.Popen(["tar", "-C", str(t / "rootfs"), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "-", "localhost/fp-busybox:test"], stdin=tar.stdout, env=env,
                   check=True, capture_output=True, timeout=120)
    tar.wait()
    try:
        yield t, env
    finally:
        subprocess.run(["podman", "system", "reset", "--force"], env=env, capture_output=True,
                       timeout=120)
        shutil.rmtree(t, ignore_errors=True)


@pytest.fixture
def agent(instance, tmp_path):
    """The node agent on this instance's default socket: the plugin finds it through the
    conflist's `instance`, as on a real node where podman's environment says nothing."""
    from fastpath.cni import wire

    from .conftest import Agent
    a = Agent(wire.socket_path({"FASTPATH_INSTANCE": instance}), tmp_path / "agent.log", verbose=True)
    a.start()
    try:
        yield a
    finally:
        a.stop()


def test_podman_container_gets_fastpath_network(cluster, podman_env, agent, instance, state_dir):
    t, env = podman_env
    env = {k: v for k, v in env.items() if k != "FASTPATH_INSTANCE"}
    node1, node2 = cluster["nodes"][0], cluster["nodes"][1]
    target = next(p for p in cluster["pods"] if p["node"] == node2["name"])
    (t / "cni-conf" / "fpnet.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "fpnet",
        "plugins": [{"type": "fastpath", "podCIDR": node1["pod_cidr"], "instance": instance,
                     "stateDir": str(state_dir), "mtu": 1500}]}))
    server = subprocess.Popen(["ip", "netns", "exec", target["netns"], sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        p = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node1['netns']}", "podman", "run", "--rm",
             "--network", "fpnet", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
             "localhost/fp-busybox:test", "/bin/sh", "-c",
             f"ip -4 -o addr show eth0; nc {target['ip']} 8080"],
            env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
        server.wait()
    assert p.returncode == 0, p.stdout + p.stderr
    addr_line, peer_line = p.stdout.strip().splitlines()[-2:]
    ip = addr_line.split("inet ")[1].split("/")[0]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node1["pod_cidr"])
    assert ip not in {pod["ip"] for pod in cluster["pods"]}
    assert peer_line == f"peer={ip}"  # no NAT: the pod on node2 sees the container's address
    # --rm ran CNI DEL: the lease and the host veth are gone.
    from fastpath.podnet.ipam import Ipam
    assert not [lease for lease in Ipam().leases() if lease.owner.startswith("cni/")]
    links = subprocess.run(["ip", "-n", node1["netns"], "-o", "link"], capture_output=True,
                           text=True).stdout
    assert links.count("ee:ee:ee:ee:ee:ee") == 1  # only the demo pod's veth
    log = agent.log.read_text()
    assert "ADD " in log and "DEL " in log and "exit 0" in log, log  # served by the agent
