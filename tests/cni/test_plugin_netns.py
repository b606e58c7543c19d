"""The plugin on real namespaces: every command, exec'd as a runtime does, inside a node netns
the test makes; with the agent and without."""

import ipaddress
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

TCP_ECHO_PEER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777)); s.listen(); s.settimeout(10)
print("ready", flush=True)
c, a = s.accept(); c.sendall(a[0].encode()); c.close()
"""
TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7777), timeout=5); print(c.recv(100).decode())
"""


def prev_result(conf: dict, add_doc: dict) -> dict:
    return {**conf, "prevResult": add_doc}


def tcp_source_seen(node, src_ns: str, dst_ns: str, dst_ip: str) -> str:
    server = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c", TCP_ECHO_PEER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        return node.sh(sys.executable, "-c", TCP_CLIENT, dst_ip, ns=src_ns).strip()
    finally:
        server.kill()
        server.wait()


def test_add_check_del_roundtrip(anynode):
    node = anynode
    pod1, pod2 = node.add_pod_netns(), node.add_pod_netns()
    a1 = node.cni("ADD", cid="c1", netns=pod1, launcher="python")
    assert a1.rc == 0, a1.out + a1.err
    doc = a1.doc
    assert doc["cniVersion"] == "1.1.0"
    host_if, pod_if = doc["interfaces"]
    assert pod_if["name"] == "eth0" and pod_if["sandbox"] == pod1 and pod_if["mac"]
    assert host_if["name"] in node.links() and "sandbox" not in host_if
    ip = doc["ips"][0]
    assert ip["interface"] == 1 and ip["gateway"] == "169.254.1.1"
    assert ipaddress.ip_interface(ip["address"]).ip in ipaddress.ip_network("10.123.7.0/24")
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]

    a2 = node.cni("ADD", cid="c2", netns=pod2)  # the native launcher
    assert a2.rc == 0, a2.out
    ip2 = a2.doc["ips"][0]["address"].split("/")[0]
    assert ip2 != ip["address"].split("/")[0]
    # Routing mode through the node: pod1 -> pod2 keeps pod1's address.
    assert tcp_source_seen(node, pod1.split("/")[-1], pod2.split("/")[-1], ip2) == \
        ip["address"].split("/")[0]

    from tests.conftest import run_fastpath
    listed = json.loads(run_fastpath("cni", "list", "--json",
                                     env={**os.environ, "FASTPATH_STATE_DIR": node.state_dir}).stdout)
    assert sorted((r["container_id"], r["address"]) for r in listed) == sorted(
        [("c1", ip["address"]), ("c2", a2.doc["ips"][0]["address"])])

    conf = node.conf()
    chk = node.cni("CHECK", prev_result(conf, doc), cid="c1", netns=pod1)
    assert chk.rc == 0 and chk.out == "", chk.out

    for launcher in ("python", "native"):  # DEL is idempotent
        d = node.cni("DEL", cid="c1", netns=pod1, launcher=launcher)
        assert d.rc == 0 and d.out == "", d.out
    assert host_if["name"] not in node.links()
    assert [o for _, o in node.leases()] == ["cni/fpnet/c2/eth0"]
    assert node.cni("DEL", cid="c2", netns=pod2).rc == 0
    assert node.leases() == []
    assert node.sh("ip", "-o", "link", "show", ns=pod1.split("/")[-1]).count(":") >= 1
    assert "eth0" not in node.sh("ip", "-o", "link", "show", ns=pod1.split("/")[-1])


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_result_in_requested_version(agent_node, version):
    node = agent_node
    pod = node.add_pod_netns()
    conf = node.conf(cniVersion=version)
    a = node.cni("ADD", conf, netns=pod)
    assert a.rc == 0, a.out
    assert a.doc["cniVersion"] == version
    assert all("mtu" not in i for i in a.doc["interfaces"])
    assert ("version" in a.doc["ips"][0]) == (version == "0.4.0")
    assert node.cni("CHECK", prev_result(conf, a.doc), netns=pod).rc == 0
    assert node.cni("DEL", conf, netns=pod).rc == 0


def test_version_and_errors(node):
    v = node.cni("VERSION", stdin=b'{"cniVersion":"1.1.0"}')
    assert v.rc == 0 and v.doc["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    bad = node.cni("ADD", stdin=b"{not json", netns="/run/netns/x")
    assert bad.rc != 0 and bad.doc["code"] == 6
    bad = node.cni("ADD", node.conf(mtu=5), netns="/run/netns/x")
    assert bad.doc["code"] == 7 and "mtu" in bad.doc["msg"]
    bad = node.cni("ADD", node.conf(cniVersion="0.3.1"), netns="/run/netns/x")
    assert bad.doc["code"] == 1
    bad = node.cni("ADD", env={"CNI_IFNAME": ""}, netns="/run/netns/x")
    assert bad.doc["code"] == 4 and "CNI_IFNAME" in bad.doc["msg"]
    gone = f"/run/netns/fp-{node.tag}-never"
    bad = node.cni("ADD", netns=gone)
    assert bad.doc["code"] == 3, bad.out
    assert not os.path.exists(gone)


def test_del_unknown_and_vanished_netns(anynode):
    node = anynode
    assert node.cni("DEL", cid="never-added", netns="/run/netns/nope").rc == 0
    pod = node.add_pod_netns()
    a = node.cni("ADD", netns=pod)
    assert a.rc == 0, a.out
    from fastpath.kernel import netns
    netns.delete(pod.split("/")[-1])
    node.pods.remove(pod.split("/")[-1])
    d = node.cni("DEL", netns=pod)
    assert d.rc == 0, d.out
    assert not os.path.exists(pod), "DEL re-created the netns"
    assert node.leases() == []
    assert a.doc["interfaces"][0]["name"] not in node.links()
    assert node.cni("DEL", netns=pod).rc == 0


@pytest.mark.parametrize("env", [
    {"FASTPATH_CNI_FAIL_AT": "ipam"},
    {"FASTPATH_PODNET_FAIL_AT": "veth"},
    {"FASTPATH_PODNET_FAIL_AT": "host-route"},
    {"FASTPATH_PODNET_FAIL_AT": "pod-routes"},
    {"FASTPATH_CNI_FAIL_AT": "record"},
], ids=lambda e: next(iter(e.values())))
def test_add_rolls_back(agent_node, env):
    node = agent_node
    pod = node.add_pod_netns()
    before = set(node.links())
    a = node.cni("ADD", netns=pod, env=env)
    assert a.rc != 0 and a.doc["code"] == 107 and "injected" in a.doc["details"], a.out
    assert set(node.links()) == before
    assert node.leases() == []
    assert "inet 10." not in node.sh("ip", "-o", "addr", "show", ns=pod.split("/")[-1])
    assert "eth0" not in node.sh("ip", "-o", "link", "show", ns=pod.split("/")[-1])
    again = node.cni("ADD", netns=pod)  # nothing left in the way
    assert again.rc == 0, again.out
    assert node.cni("DEL", netns=pod).rc == 0


def test_add_rolls_back_in_process(node):
    pod = node.add_pod_netns()
    a = node.cni("ADD", netns=pod, env={"FASTPATH_PODNET_FAIL_AT": "pod-address"})
    assert a.rc != 0 and a.doc["code"] == 107, a.out
    assert [ln for ln in node.links() if ln.startswith("fp")] == []
    assert node.leases() == []


def _tamper_cases():
    return {
        "address": (lambda n, pod, host: n.sh("ip", "addr", "flush", "dev", "eth0", ns=pod), "address"),
        "pod-route": (lambda n, pod, host: n.sh("ip", "route", "del", "default", ns=pod), "default route"),
        "host-route": (lambda n, pod, host: n.sh("ip", "route", "flush", "dev", host), "route"),
        "host-link-down": (lambda n, pod, host: n.sh("ip", "link", "set", host, "down"), "down"),
        "link-gone": (lambda n, pod, host: n.sh("ip", "link", "del", host), "missing"),
        "forward": (lambda n, pod, host: (n.sh("iptables", "-P", "FORWARD", "DROP"),
                                          n.sh("iptables", "-D", "FORWARD", "-j", "FP-FORWARD")),
                    "FORWARD"),
    }


@pytest.mark.parametrize("case", list(_tamper_cases()))
def test_check_catches_tampering(agent_node, case):
    node = agent_node
    tamper, word = _tamper_cases()[case]
    pod = node.add_pod_netns()
    a = node.cni("ADD", netns=pod)
    assert a.rc == 0, a.out
    conf = prev_result(node.conf(), a.doc)
    assert node.cni("CHECK", conf, netns=pod).rc == 0
    tamper(node, pod.split("/")[-1], a.doc["interfaces"][0]["name"])
    c = node.cni("CHECK", conf, netns=pod)
    assert c.rc != 0 and c.doc["code"] == 109 and word in c.doc["details"], c.out
    assert node.cni("DEL", netns=pod).rc == 0


def test_check_wrong_prev_result_and_unknown(agent_node):
    node = agent_node
    pod = node.add_pod_netns()
    a = node.cni("ADD", netns=pod)
    doc = json.loads(json.dumps(a.doc))
    doc["ips"][0]["address"] = "10.123.7.250/32"
    c = node.cni("CHECK", prev_result(node.conf(), doc), netns=pod)
    assert c.doc["code"] == 109 and "prevResult" in c.doc["details"]
    c = node.cni("CHECK", node.conf(), netns=pod)
    assert c.doc["code"] == 7  # CHECK without prevResult
    c = node.cni("CHECK", prev_result(node.conf(), a.doc), cid="other", netns=pod)
    assert c.doc["code"] == 3
    assert node.cni("DEL", netns=pod).rc == 0


def test_gc_removes_what_is_not_valid(agent_node):
    node = agent_node
    pods = [node.add_pod_netns() for _ in range(3)]
    docs = {}
    for i, pod in enumerate(pods):
        a = node.cni("ADD", cid=f"c{i}", netns=pod)
        assert a.rc == 0, a.out
        docs[f"c{i}"] = a.doc
    conf = node.conf(**{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    g = node.cni("GC", conf)
    assert g.rc == 0 and g.out == "", g.out
    links = node.links()
    assert docs["c1"]["interfaces"][0]["name"] in links
    assert docs["c0"]["interfaces"][0]["name"] not in links
    assert docs["c2"]["interfaces"][0]["name"] not in links
    assert [o for _, o in node.leases()] == ["cni/fpnet/c1/eth0"]
    route = node.sh("ip", "route")
    assert docs["c0"]["ips"][0]["address"].split("/")[0] not in route
    assert node.cni("CHECK", prev_result(node.conf(), docs["c1"]), cid="c1", netns=pods[1]).rc == 0
    assert node.cni("GC", node.conf()).rc == 0  # nothing valid: all gone
    assert node.leases() == []


def test_status(agent_node):
    node = agent_node
    node.sh("sysctl", "-qw", "net.ipv4.ip_forward=0")
    assert node.cni("STATUS").rc == 0  # no pods yet: ADD turns forwarding on
    small = node.conf(podCIDR="10.123.8.0/30")  # one usable address
    pod1, pod2 = node.add_pod_netns(), node.add_pod_netns()
    assert node.cni("ADD", small, cid="a", netns=pod1).rc == 0
    assert node.sh("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    node.sh("sysctl", "-qw", "net.ipv4.ip_forward=0")
    s = node.cni("STATUS")
    assert s.rc != 0 and s.doc["code"] == 51
    node.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
    s = node.cni("STATUS", small)
    assert s.doc["code"] == 50 and "10.123.8.0/30" in s.doc["details"]
    full = node.cni("ADD", small, cid="b", netns=pod2)
    assert full.doc["code"] == 104, full.out
    assert node.cni("DEL", small, cid="a", netns=pod1).rc == 0
    assert node.cni("STATUS", small).rc == 0
    assert node.cni("STATUS", node.conf(podCIDR=None, ipam={"type": "no-such-ipam"})).doc["code"] == 50


def test_delegated_host_local(anynode, tmp_path):
    node = anynode
    data = tmp_path / "host-local"
    conf = node.conf(podCIDR=None, ipam={"type": "host-local", "dataDir": str(data),
                                          "ranges": [[{"subnet": "10.123.9.0/24"}]]})
    pod = node.add_pod_netns()
    a = node.cni("ADD", conf, netns=pod)
    assert a.rc == 0, a.out
    ip = a.doc["ips"][0]["address"]
    assert ipaddress.ip_interface(ip).ip in ipaddress.ip_network("10.123.9.0/24")
    leased = [f for f in os.listdir(data / "fpnet") if f[0].isdigit()]
    assert leased == [ip.split("/")[0]]
    assert node.leases() == []  # fastpath's own IPAM untouched
    assert node.cni("CHECK", prev_result(conf, a.doc), netns=pod).rc == 0
    assert node.cni("DEL", conf, netns=pod).rc == 0
    assert [f for f in os.listdir(data / "fpnet") if f[0].isdigit()] == []
    # A failure after host-local's ADD gives its address back.
    f = node.cni("ADD", conf, netns=pod, env={"FASTPATH_PODNET_FAIL_AT": "pod-address"})
    assert f.rc != 0
    assert [f for f in os.listdir(data / "fpnet") if f[0].isdigit()] == []
    missing = node.cni("ADD", conf, netns=pod, env={"CNI_PATH": "/nonexistent"})
    assert missing.doc["code"] == 108 and "host-local" in missing.doc["details"]


def test_concurrent_adds_get_distinct_addresses(node, shared_agent):
    """Runtimes ADD pods in parallel: through the agent and in-process at once, every pod
    gets its own address and link; then all DELs leave nothing."""
    from concurrent.futures import ThreadPoolExecutor
    pods = [node.add_pod_netns() for _ in range(8)]

    def env(i):
        return {"FASTPATH_AGENT_SOCKET": shared_agent.socket_path, "FASTPATH_CNI_NO_AGENT": ""} \
            if i % 2 else {}

    def add(i):
        return node.cni("ADD", cid=f"p{i}", netns=pods[i], env=env(i))
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(add, range(8)))
    assert all(a.rc == 0 for a in answers), [a.out for a in answers if a.rc]
    ips = {a.doc["ips"][0]["address"] for a in answers}
    assert len(ips) == 8 and len(node.leases()) == 8
    with ThreadPoolExecutor(8) as ex:
        dels = list(ex.map(lambda i: node.cni("DEL", cid=f"p{i}", netns=pods[i], env=env(i + 1)),
                           range(8)))
    assert all(d.rc == 0 for d in dels)
    assert node.leases() == [] and not [ln for ln in node.links() if ln.startswith("fp")]
