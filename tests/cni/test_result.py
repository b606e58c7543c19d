"""Result documents across 1.1.0, 1.0.0 and 0.4.0."""

import pytest

from fastpath.cni import result

RICH = result.build(
    interfaces=[{"name": "fpabc", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1500},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/p", "mtu": 1500,
                 "socketPath": "/x", "pciID": "0000:00:01.0"}],
    ips=[{"address": "10.244.1.5/32", "gateway": "169.254.1.1", "interface": 1}],
    routes=[{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "advmss": 1360,
             "priority": 10, "table": 100, "scope": 0}],
    dns={"nameservers": ["10.96.0.10"]})


def test_110_keeps_everything():
    out = result.convert(RICH, "1.1.0")
    assert out["cniVersion"] == "1.1.0"
    assert out["routes"][0]["advmss"] == 1360 and out["interfaces"][1]["pciID"]
    assert "version" not in out["ips"][0]


def test_100_drops_11_fields():
    out = result.convert(RICH, "1.0.0")
    assert out["cniVersion"] == "1.0.0"
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    assert all(set(i) <= {"name", "mac", "sandbox"} for i in out["interfaces"])
    assert "version" not in out["ips"][0]
    assert RICH["routes"][0]["mtu"] == 1400  # the input is not modified


def test_040_adds_ip_version():
    out = result.convert(RICH, "0.4.0")
    assert out["cniVersion"] == "0.4.0"
    assert out["ips"][0]["version"] == "4"
    assert "advmss" not in out["routes"][0]


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_roundtrip(version):
    back = result.normalize(result.convert(RICH, version))
    again = result.convert(back, version)
    assert again == result.convert(RICH, version)


def test_empty_dns_omitted():
    out = result.convert(result.build(interfaces=[], ips=[], routes=[]), "1.0.0")
    assert "dns" not in out


def test_unknown_version():
    with pytest.raises(ValueError):
        result.convert(RICH, "0.3.1")
    with pytest.raises(ValueError):
        result.normalize({"cniVersion": "0.2.0"})


def test_normalize_host_local_answer():
    hl = {"cniVersion": "1.0.0", "ips": [{"address": "10.9.0.2/24", "gateway": "10.9.0.1"}],
          "dns": {}}
    n = result.normalize(hl)
    assert n["ips"] == [{"address": "10.9.0.2/24", "gateway": "10.9.0.1"}]
    assert n["interfaces"] == [] and n["routes"] == []


def test_merge_shifts_interface_indices():
    prev = result.build(interfaces=[{"name": "lo0"}], ips=[{"address": "10.0.0.9/32", "interface": 0}],
                        routes=[])
    merged = result.merge(prev, RICH)
    assert [i["name"] for i in merged["interfaces"]] == ["lo0", "fpabc", "eth0"]
    assert merged["ips"][1]["interface"] == 2
    assert result.merge(None, RICH) is RICH
