import os
import re
import shutil
import subprocess

import pytest

from fastpath.bgp.config import peer_of_protocol, peer_protocol, render
from fastpath.bgp.model import Mesh, Timers
from tests.conftest import require

from .test_model import mesh, node


def bgp_blocks(text):
    return dict(re.findall(r"protocol bgp (\S+) \{(.*?)\n\}", text, re.S))


def test_full_mesh_config():
    text = render(mesh(3), "node2", "/x/node2.log")
    assert "router id 10.237.0.2;" in text
    assert "define FP_POD_CIDR = 10.238.2.0/24;" in text
    assert "define FP_PEER_CIDRS = [ 10.238.1.0/24, 10.238.3.0/24 ];" in text
    assert "route FP_POD_CIDR blackhole;" in text
    blocks = bgp_blocks(text)
    assert set(blocks) == {"fp_peer_node1", "fp_peer_node3"}
    b = blocks["fp_peer_node3"]
    assert "local 10.237.0.2 as 64512;" in b and "neighbor 10.237.0.3 as 64512;" in b
    assert "hold time 3;" in b and "keepalive time 1;" in b and "connect retry time 1;" in b
    assert "import filter fp_import;" in b and "export filter fp_export;" in b
    assert "rr client" not in b
    # only BGP routes into the kernel, nothing from the kernel into BIRD
    assert "import none;" in text and "learn off;" in text
    assert "export where source = RTS_BGP && net ~ FP_PEER_CIDRS;" in text
    # a non-reflector never re-exports BGP routes
    export = re.search(r"filter fp_export \{(.*?)\n\}", text, re.S).group(1)
    assert "RTS_BGP" not in export
    assert 'log "/x/node2.log"' in text


def test_reflector_and_client_configs():
    m = mesh(4, reflector="node1")
    rr = render(m, "node1")
    blocks = bgp_blocks(rr)
    assert set(blocks) == {"fp_peer_node2", "fp_peer_node3", "fp_peer_node4"}
    assert all("rr client;" in b for b in blocks.values())
    assert "if source = RTS_BGP && net ~ FP_PEER_CIDRS then accept;" in rr
    client = render(m, "node3")
    assert set(bgp_blocks(client)) == {"fp_peer_node1"}
    assert "rr client" not in client


def test_timers_rendered():
    text = render(mesh(2, timers=Timers(hold=9, keepalive=3, connect_retry=2, error_wait_min=2,
                                        error_wait_max=7)), "node1")
    b = bgp_blocks(text)["fp_peer_node2"]
    for line in ("hold time 9;", "keepalive time 3;", "connect retry time 2;", "error wait time 2, 7;"):
        assert line in b


def test_single_node_imports_nothing():
    text = render(Mesh((node(1),)), "node1")
    assert "FP_PEER_CIDRS" not in text
    assert "net.type = NET_IP4 && false then accept" in text
    assert "protocol bgp" not in text


def test_adding_a_node_leaves_existing_sessions_identical():
    # BIRD restarts a session only if its protocol block changed: adding a node must only
    # add a block (and change the filters, which BIRD refeeds without a reset).
    before, after = bgp_blocks(render(mesh(3), "node1")), bgp_blocks(render(mesh(4), "node1"))
    assert set(after) - set(before) == {"fp_peer_node4"}
    assert all(after[k] == v for k, v in before.items())


def test_protocol_names_round_trip():
    assert peer_protocol("node-a1") == "fp_peer_node_a1"
    assert peer_of_protocol("fp_peer_node_a1") == "node-a1"
    assert peer_of_protocol("fp_kernel") is None


@pytest.mark.parametrize("m, name", [(mesh(3), "node1"), (mesh(5, reflector="node2"), "node2"),
                                     (mesh(5, reflector="node2"), "node4"), (Mesh((node(1),)), "node1")])
def test_bird_accepts_rendered_config(tmp_path, m, name):
    require(shutil.which("bird") is not None or os.path.exists("/usr/sbin/bird"),
            "bird is not installed (scripts/install-system-packages.sh)")
    f = tmp_path / "bird.conf"
    f.write_text(render(m, name, str(tmp_path / "log")))
    p = subprocess.run([shutil.which("bird") or "/usr/sbin/bird", "-p", "-c", str(f)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def _external_mesh(node_mesh=True):
    from dataclasses import replace

    from fastpath.bgp.model import ExternalPeer
    m = mesh(3)
    nodes = tuple(replace(n, asn=65100 + i) if n.name == "node3" else n for i, n in enumerate(m.nodes))
    return replace(m, nodes=nodes, node_mesh=node_mesh,
                   external=(ExternalPeer("tor", "10.0.0.254", 65000, password="s3cret"),
                             ExternalPeer("rs", "10.0.0.253", 65001, node="node2")))


def test_external_peers_and_per_node_asn_are_rendered():
    text = render(_external_mesh(), "node2", "/x/log")
    blocks = bgp_blocks(text)
    tor, rs = blocks["fp_ext_tor"], blocks["fp_ext_rs"]
    assert "neighbor 10.0.0.254 as 65000;" in tor and 'password "s3cret";' in tor
    assert "allow local as;" in tor and "direct;" not in tor      # eBGP: BIRD's default is on-link
    assert "neighbor 10.0.0.253 as 65001;" in rs and "password" not in rs
    assert "neighbor 10.237.0.3 as 65102;" in blocks["fp_peer_node3"]   # node3 has its own ASN
    assert "fp_ext_rs" not in render(_external_mesh(), "node1", "/x/log")  # rs is node2's only
    assert peer_of_protocol("fp_ext_tor") == "peer:tor"
    # node2 shares its ASN with node1: it must accept its own ASN in a path through the ToR;
    # node3 has one of its own, so the ToR's echo of node3's block fails the loop check
    assert "allow local as;" not in bgp_blocks(render(_external_mesh(), "node3", "/x/log"))["fp_ext_tor"]
    tor_only = bgp_blocks(render(_external_mesh(node_mesh=False), "node1", "/x/log"))
    assert list(tor_only) == ["fp_ext_tor"]


@pytest.mark.parametrize("node_mesh", [True, False])
def test_bird_accepts_external_peers(tmp_path, node_mesh):
    require(shutil.which("bird") is not None or os.path.exists("/usr/sbin/bird"),
            "bird is not installed (scripts/install-system-packages.sh)")
    f = tmp_path / "bird.conf"
    f.write_text(render(_external_mesh(node_mesh), "node2", str(tmp_path / "log")))
    p = subprocess.run([shutil.which("bird") or "/usr/sbin/bird", "-p", "-c", str(f)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
