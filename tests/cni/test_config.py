"""Network configuration parsing and validation (SPEC.md "Network configuration")."""

import ipaddress
import json

import pytest

from fastpath.cni import config, spec
from fastpath.cni.spec import CniError

BASE = {"cniVersion": "1.1.0", "name": "podnet", "type": "fastpath", "podCIDR": "10.244.1.0/24"}


def parse(doc, command="ADD"):
    return config.parse(json.dumps(doc), command)


def code_of(doc, command="ADD"):
    with pytest.raises(CniError) as ei:
        parse(doc, command)
    return ei.value.code, ei.value.msg


def test_minimal():
    c = parse(BASE)
    assert c.name == "podnet" and c.cni_version == "1.1.0" and c.mtu == 1500
    assert c.pod_cidr == ipaddress.ip_network("10.244.1.0/24") and not c.delegated


def test_own_ipam_subnet_section():
    c = parse({**{k: v for k, v in BASE.items() if k != "podCIDR"}, "ipam": {"subnet": "10.9.0.0/16"}})
    assert str(c.pod_cidr) == "10.9.0.0/16" and not c.delegated
    c = parse({**BASE, "ipam": {"type": "fastpath"}})
    assert not c.delegated


def test_delegated_ipam():
    doc = {**{k: v for k, v in BASE.items() if k != "podCIDR"},
           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}}
    c = parse(doc)
    assert c.delegated and c.ipam["type"] == "host-local" and c.pod_cidr is None


def test_fastpath_fields():
    c = parse({**BASE, "mtu": 9000, "instance": "ab12", "stateDir": "/tmp/x",
               "agentSocket": "/run/fastpath/fp-ab12-agent.sock"})
    assert (c.mtu, c.instance, c.state_dir, c.agent_socket) == (
        9000, "ab12", "/tmp/x", "/run/fastpath/fp-ab12-agent.sock")


@pytest.mark.parametrize("data", [b"", b"{", b"[1]", b"\xff\xfe", b'"x"'])
def test_undecodable(data):
    with pytest.raises(CniError) as ei:
        config.parse(data)
    assert ei.value.code == spec.DECODE_FAILURE


@pytest.mark.parametrize("change,field", [
    ({"cniVersion": None}, "cniVersion"),
    ({"name": ""}, "name"),
    ({"name": "has space"}, "name"),
    ({"type": "ptp"}, "type"),
    ({"mtu": 10}, "mtu"),
    ({"mtu": "1500"}, "mtu"),
    ({"mtu": True}, "mtu"),
    ({"podCIDR": None}, "podCIDR"),
    ({"podCIDR": "10.244.1.1/24"}, "podCIDR"),
    ({"podCIDR": "fd00::/64"}, "podCIDR"),
    ({"podCIDR": "10.0.0.0/31"}, "podCIDR"),
    ({"podCIDR": 42}, "podCIDR"),
    ({"ipam": "host-local"}, "ipam"),
    ({"ipam": {"type": "../evil"}}, "ipam.type"),
    ({"ipam": {"type": "host-local"}}, "podCIDR"),  # both given
    ({"instance": "Bad_Tag"}, "instance"),
    ({"stateDir": "relative"}, "stateDir"),
    ({"prevResult": []}, "prevResult"),
])
def test_invalid(change, field):
    doc = {**BASE, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    code, msg = code_of(doc)
    assert code == spec.INVALID_CONFIG and field in msg


def test_incompatible_version():
    assert code_of({**BASE, "cniVersion": "0.3.1"})[0] == spec.INCOMPATIBLE_VERSION
    assert code_of({**BASE, "cniVersion": "2.0.0"})[0] == spec.INCOMPATIBLE_VERSION


def test_prev_result_normalised_from_040():
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "address": "10.244.1.2/32", "gateway": "169.254.1.1",
                     "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}]}
    c = parse({**BASE, "cniVersion": "0.4.0", "prevResult": prev}, "CHECK")
    assert c.prev_result["ips"] == [{"address": "10.244.1.2/32", "gateway": "169.254.1.1",
                                     "interface": 0}]


def test_bad_prev_result_is_decode_error():
    bad = {"ips": [{"address": "not-an-ip"}]}
    assert code_of({**BASE, "prevResult": bad}, "CHECK")[0] == spec.DECODE_FAILURE
    bad = {"interfaces": [], "ips": [{"address": "10.0.0.1/32", "interface": 3}]}
    assert code_of({**BASE, "prevResult": bad}, "CHECK")[0] == spec.DECODE_FAILURE


def test_gc_valid_attachments():
    doc = {**BASE, "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"},
                                                 {"containerID": "b", "ifname": "net1"}]}
    assert parse(doc, "GC").valid_attachments == [("a", "eth0"), ("b", "net1")]
    assert parse(BASE, "GC").valid_attachments == []
    bad = {**BASE, "cni.dev/valid-attachments": [{"containerID": "a"}]}
    assert code_of(bad, "GC")[0] == spec.INVALID_CONFIG
