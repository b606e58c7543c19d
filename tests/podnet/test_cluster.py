"""The demo cluster through the CLI, as a user runs it: up / status / check / pod add,
del, list / exec / down; bad input; rollback; concurrency."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastpath import naming
from fastpath.kernel import netns
from tests.conftest import patience, run_fastpath

pytestmark = pytest.mark.root


def _ours() -> list[str]:
    return [n for n in netns.list_names() if naming.owned(n)]


def _root_view() -> tuple[str, str]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    return (sorted(ln.split(":")[1].strip() for ln in links.splitlines()), routes)


def test_up_leaves_the_root_netns_alone(down):
    before = _root_view()
    run_fastpath("up")
    assert _root_view() == before


def test_up_check_down(cluster, instance):
    assert [n["name"] for n in cluster["nodes"]] == ["node1", "node2"]
    assert [p["ip"] for p in cluster["pods"]] == ["10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"]
    assert cluster["routes"]["node1"]["missing"] == []
    # nothing in the root netns: no link of ours there, no default route anywhere
    for ns in _ours():
        out = subprocess.run(["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True)
        rest = ns[len(naming.scope()):]
        if rest == "underlay" or rest.startswith("node"):   # pods default to their node
            assert out.stdout.strip() == "", f"{ns} has a default route"
        fw = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-S"],
                            capture_output=True, text=True).stdout
        assert "MASQUERADE" not in fw and "SNAT" not in fw
    node = naming.name("node1")
    fw = subprocess.run(["ip", "netns", "exec", node, "iptables", "-S", "FORWARD"], capture_output=True,
                        text=True).stdout
    assert "-P FORWARD DROP" in fw and "-A FORWARD -j FP-FORWARD" in fw
    chk = run_fastpath("check", "--json")
    d = json.loads(chk.stdout)
    assert d["ok"] and d["pairs"] == 12
    assert all(r["tcp"]["seen_source"] == r["src_ip"] for r in d["results"])
    assert any(not r["same_node"] for r in d["results"])
    # up again: says so, changes nothing, exit 0
    again = run_fastpath("up")
    assert "exists already" in again.stderr
    assert json.loads(run_fastpath("status", "--json").stdout)["pods"] == cluster["pods"]
    run_fastpath("down")
    assert _ours() == []
    assert "nothing to remove" in run_fastpath("down").stdout
    assert run_fastpath("status", check=False).returncode != 0


def test_pod_add_del_list_exec(cluster):
    p = json.loads(run_fastpath("pod", "add", "node2", "web", "--json").stdout)
    assert p["name"] == "web" and p["ip"] == "10.244.2.4"
    pods = json.loads(run_fastpath("pod", "list", "--json").stdout)
    assert {"name": "web", "node": "node2", "ip": "10.244.2.4"}.items() <= pods[-1].items()
    out = run_fastpath("exec", "web", "--", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert "10.244.2.4/32" in out.stdout
    assert run_fastpath("exec", "web", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    # as env(1), nsenter(1) and the shells: 127 not found, 126 found but not executable
    missing = run_fastpath("exec", "web", "--", "/nonexistent", check=False)
    assert missing.returncode == 127 and "No such file" in missing.stderr, missing.stderr
    assert run_fastpath("exec", "web", "--", "/etc/hostname", check=False).returncode == 126
    assert json.loads(run_fastpath("check", "--json").stdout)["pairs"] == 20
    run_fastpath("pod", "del", "web")
    assert naming.name("pod", "web") not in netns.list_names()
    # a freed address is reused only after the never-used ones
    assert json.loads(run_fastpath("pod", "add", "node2", "--json").stdout)["ip"] == "10.244.2.5"


def test_bad_input_names_the_thing_and_changes_nothing(cluster):
    def fails(*argv, match):
        p = run_fastpath(*argv, check=False)
        assert p.returncode != 0, argv
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and match in lines[0], p.stderr
    fails("pod", "add", "node9", match="node node9 does not exist")
    fails("pod", "del", "nope", match="pod nope does not exist")
    fails("exec", "nope", "--", "true", match="pod nope does not exist")
    fails("pod", "add", "node1", "node1-pod1", match="pod node1-pod1 already exists")
    fails("node", "add", "node3", "--pod-cidr", "10.244.2.128/25", match="overlaps pod CIDR 10.244.2.0/24")
    fails("node", "add", "node3", "--pod-cidr", "10.255.0.0/26", match="overlaps the underlay")
    fails("up", "--routing", "nosuch", match="unknown routing backend")
    fails("up", "--nodes", "0", match="--nodes 0")
    # a full IPAM range: a node whose /30 holds one pod
    run_fastpath("node", "add", "tiny", "--pod-cidr", "10.250.0.0/30")
    assert json.loads(run_fastpath("pod", "add", "tiny", "--json").stdout)["ip"] == "10.250.0.2"
    fails("pod", "add", "tiny", match="IPAM pool 10.250.0.0/30 is full")
    listed = json.loads(run_fastpath("pod", "list", "--json").stdout)
    assert [p["name"] for p in listed].count("tiny-pod2") == 0
    run_fastpath("node", "del", "tiny")
    # a netns that vanished underneath
    netns.delete(naming.name("pod", "node2-pod2"))
    netns.delete(naming.name("node2"))
    fails("pod", "add", "node2", "late", match=f"netns {naming.name('node2')} does not exist")
    p = run_fastpath("status", "--json", check=False)
    st = json.loads(p.stdout)
    assert p.returncode == 1 and not st["health"]["ok"]   # node2's netns is gone
    assert st["pods"] == cluster["pods"] and st["nodes"] == cluster["nodes"]
    # node1's pods still reach each other
    chk = json.loads(run_fastpath("check", "--json", check=False).stdout)
    assert all(r["icmp"]["ok"] and r["tcp"]["ok"] for r in chk["results"]
               if r["src"].startswith("node1") and r["dst"].startswith("node1"))




def test_status_names_breakage_and_check_recovers(cluster):
    pod = cluster["pods"][0]
    node2 = naming.name("node2")
    subprocess.run(["ip", "-n", naming.name("node1"), "link", "set", pod["host_ifname"], "down"], check=True)
    subprocess.run(["ip", "netns", "exec", node2, "iptables", "-F", "FP-FORWARD"], check=True)
    p = run_fastpath("status", "--json", check=False)
    st = json.loads(p.stdout)["health"]
    assert p.returncode == 1 and not st["ok"]
    assert any("does not jump to an intact FP-FORWARD" in x for x in st["nodes"]["node2"])
    assert f"host interface {pod['host_ifname']} is down" in st["pods"][pod["name"]]
    chk = run_fastpath("check", "--json", check=False)
    assert chk.returncode == 1 and json.loads(chk.stdout)["failed"] == 12
    # repair: the link up (and its /32 route back), the chain restored
    subprocess.run(["ip", "-n", naming.name("node1"), "link", "set", pod["host_ifname"], "up"], check=True)
    subprocess.run(["ip", "-n", naming.name("node1"), "route", "add", f"{pod['ip']}/32", "dev",
                    pod["host_ifname"], "scope", "link"], check=True)
    from fastpath.podnet import netfilter
    netfilter.ensure_forward(node2)
    assert json.loads(run_fastpath("status", "--json").stdout)["health"]["ok"]
    assert json.loads(run_fastpath("check", "--json").stdout)["ok"]


def test_up_over_leftovers_names_them(down):
    netns.create(naming.name("underlay"))
    p = run_fastpath("up", check=False)
    assert p.returncode != 0 and "already exists but is not in the cluster state" in p.stderr
    assert _ours() == [naming.name("underlay")]
    run_fastpath("down")
    run_fastpath("up")


def test_node_add_del(cluster):
    n = json.loads(run_fastpath("node", "add", "--json").stdout)
    assert n["name"] == "node3" and n["pod_cidr"] == "10.244.3.0/24"
    run_fastpath("pod", "add", "node3")
    st = json.loads(run_fastpath("status", "--json").stdout)
    assert st["routes"]["node1"]["missing"] == []
    assert "10.244.3.0/24 via 10.255.0.3" in st["routes"]["node1"]["expected"]
    assert json.loads(run_fastpath("check", "--json").stdout)["ok"]
    run_fastpath("node", "del", "node3")
    st = json.loads(run_fastpath("status", "--json").stdout)
    assert [x["name"] for x in st["nodes"]] == ["node1", "node2"]
    assert not any("10.244.3.0" in r for r in st["routes"]["node1"]["installed"])


def test_twenty_concurrent_pod_adds_get_distinct_ips(cluster):
    # 20 processes start at once on two CPUs: each may wait for all of them to start
    limit = patience(60, starts=20)
    with ThreadPoolExecutor(20) as ex:
        outs = list(ex.map(lambda i: run_fastpath("pod", "add", "node1", "--json",
                                                  timeout=limit), range(20)))
    pods = [json.loads(o.stdout) for o in outs]
    ips = [p["ip"] for p in pods]
    assert len(set(ips)) == 20 and len({p["name"] for p in pods}) == 20
    listed = json.loads(run_fastpath("pod", "list", "--json").stdout)
    assert len(listed) == 24 and len({p["ip"] for p in listed}) == 24


@pytest.mark.parametrize("step", ["underlay", "node", "veth", "pod-routes", "routing"])
def test_up_rolls_back_after_injected_failure(down, instance, step):
    env = {**os.environ, "FASTPATH_PODNET_FAIL_AT": step}
    p = run_fastpath("up", check=False, env=env)
    assert p.returncode != 0 and "injected failure" in p.stderr
    assert _ours() == []
    assert run_fastpath("status", check=False).returncode != 0
    run_fastpath("up")   # and a clean up works afterwards
    assert json.loads(run_fastpath("check", "--json").stdout)["ok"]


def test_pod_add_rolls_back_after_injected_failure(cluster):
    before = json.loads(run_fastpath("status", "--json").stdout)
    env = {**os.environ, "FASTPATH_PODNET_FAIL_AT": "pod-address"}
    p = run_fastpath("pod", "add", "node1", "x1", check=False, env=env)
    assert p.returncode != 0 and "injected failure" in p.stderr
    assert naming.name("pod", "x1") not in netns.list_names()
    assert json.loads(run_fastpath("status", "--json").stdout)["pods"] == before["pods"]
    # .4 was leased and released by the rollback: never-used .5 comes first
    assert json.loads(run_fastpath("pod", "add", "node1", "x1", "--json").stdout)["ip"] == "10.244.1.5"


def test_down_after_a_crash_midway(down, instance):
    # a half-made cluster, as if `up` died: state row and some netns, no rollback ran
    from fastpath.podnet import cluster as cl
    conn = cl.connect()
    cl.insert_cluster(conn, underlay="10.255.0.0/24", underlay_netns=naming.name("underlay"),
                      bridge="x", pod_supernet="10.244.0.0/16", routing="static")
    netns.create(naming.name("underlay"))
    netns.create(naming.name("node1"))
    netns.create(naming.name("pod", "node1-pod1"))
    out = run_fastpath("down").stdout
    assert "fp-" in out and _ours() == []
    run_fastpath("up")
