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


def agent_metric(node_netns: str, line_prefix: str) -> float:
    """A sample of the node agent's /metrics, read from inside the node (where it listens)."""
    p = subprocess.run(["ip", "netns", "exec", node_netns, sys.executable, "-c",
                        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9099/metrics', "
                        "timeout=5).read().decode())"], capture_output=True, text=True, timeout=30)
    for line in p.stdout.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_podman_container_gets_fastpath_network(cluster, podman_env, instance, state_dir):
    """podman on node1 adds a container through node1's own agent (the demo's, on its socket),
    which fills in the node's pod CIDR, as on a real node where the runtime knows nothing
    of fastpath but the plugin's type."""
    from fastpath.agent import demo
    t, env = podman_env
    env = {k: v for k, v in env.items() if not k.startswith("FASTPATH_")}
    node1, node2 = cluster["nodes"][0], cluster["nodes"][1]
    target = next(p for p in cluster["pods"] if p["node"] == node2["name"])
    (t / "cni-conf" / "fpnet.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "fpnet",
        "plugins": [{"type": "fastpath", "agentSocket": demo.cni_socket(node1["name"]), "mtu": 1500}]}))
    adds = agent_metric(node1["netns"], 'fastpath_cni_requests_total{command="ADD",result="ok"}')
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
    # --rm ran CNI DEL: the host veth is gone, and the agent served both requests
    links = subprocess.run(["ip", "-n", node1["netns"], "-o", "link"], capture_output=True,
                           text=True).stdout
    assert links.count("ee:ee:ee:ee:ee:ee") == 1  # only the demo pod's veth
    assert agent_metric(node1["netns"], 'fastpath_cni_requests_total{command="ADD",result="ok"}') == adds + 1
    assert agent_metric(node1["netns"], 'fastpath_cni_requests_total{command="DEL",result="ok"}') >= 1
