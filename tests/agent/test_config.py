"""The agent's settings and the systemd unit in contrib/: pure, no root."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from fastpath.agent import bgpview
from fastpath.agent.config import load
from fastpath.cli import build_parser
from fastpath.cluster.objects import Alive, BgpConfig, Node, Peer, View
from fastpath.errors import ConfigError

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "fastpath-agent.service"


def test_flags_win_over_the_file(tmp_path):
    f = tmp_path / "agent.json"
    f.write_text(json.dumps({"node": "node1", "asn": 65001, "podCIDR": "10.244.1.0/24", "leaseTTL": 7}))
    cfg = load(str(f), asn=65002, node=None)
    assert (cfg.node, cfg.asn, cfg.pod_cidr, cfg.lease_ttl) == ("node1", 65002, "10.244.1.0/24", 7)


@pytest.mark.parametrize("doc, msg", [
    ({"node": "n1", "nodeName": "x"}, "unknown keys"),
    ({"asn": 1}, "no node name"),
    ({"node": "n1", "leaseTTL": 1}, "lease TTL"),
    ({"node": "n1", "health": "nowhere"}, "HOST:PORT"),
    ({"node": "N1"}, "node name"),
])
def test_bad_settings_are_one_clear_error(tmp_path, doc, msg):
    f = tmp_path / "agent.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=msg):
        load(str(f))


def test_the_systemd_unit_runs_a_command_fastpath_accepts(tmp_path):
    text = UNIT.read_text()
    execstart = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    argv = shlex.split(execstart)[1:]
    args = build_parser().parse_args(argv)
    assert args.command == "agent" and args.config == "/etc/fastpath/agent.json"
    example = "\n".join(line[1:].strip() for line in text.splitlines()
                        if line.startswith("#   ") and ("{" in line or '"' in line))
    f = tmp_path / "agent.json"
    f.write_text(example[example.index("{"):])
    cfg = load(str(f))
    assert cfg.node == "node1" and cfg.proxy and cfg.datastore.startswith("etcd://")


def _view(*nodes, alive=(), peers=(), bgp=None) -> View:
    v = View(bgp=bgp or BgpConfig())
    for n in nodes:
        v.nodes[n.name] = n
    for a in alive:
        v.alive[a] = Alive(a, 1, 1, "h", 0.0)
    for p in peers:
        v.peers[p.name] = p
    return v


def test_bird_peers_follow_registration_not_the_agents_lease():
    me = Node("node1", "10.0.0.1/24", "10.244.1.0/24")
    v = _view(me, Node("node2", "10.0.0.2/24", "10.244.2.0/24"),
              Node("node3", "10.0.0.3/24", "10.244.3.0/24"), Node("node4", "10.0.0.4/24", None),
              alive=["node1", "node2"],
              peers=[Peer("tor", "10.0.0.254", 65000), Peer("rs", "10.0.0.253", 65001, node="node2")])
    mesh = bgpview.mesh_for(v, me)
    # node3's agent is dead (no lease), but its BIRD and pods are not: it stays peered;
    # node4 has no pod CIDR yet, so there is nothing to route to
    assert [n.name for n in mesh.nodes] == ["node1", "node2", "node3"]
    assert [p.name for p in mesh.external_of("node1")] == ["tor"]
    tor_only = bgpview.mesh_for(_view(me, alive=["node1"], peers=[Peer("tor", "10.0.0.254", 65000)],
                                      bgp=BgpConfig(mesh=False, hold=9)), me)
    assert tor_only.peers("node1") == [] and tor_only.timers.hold == 9 and tor_only.timers.keepalive == 3


def test_a_reflector_whose_agent_died_still_reflects():
    rr = Node("node1", "10.0.0.1/24", "10.244.1.0/24")
    me = Node("node2", "10.0.0.2/24", "10.244.2.0/24")
    v = _view(rr, me, alive=["node2"], bgp=BgpConfig(reflectors=("node1",)))
    mesh = bgpview.mesh_for(v, me)
    assert mesh.reflector == "node1" and [n.name for n, _ in mesh.peers("node2")] == ["node1"]


def test_the_systemd_unit_restarts_the_agent_for_ever():
    text = UNIT.read_text()
    assert re.search(r"^Restart=always$", text, re.M)
    assert re.search(r"^RestartSec=\S+", text, re.M)
    # the default start limit (5 starts in 10 s) would leave a crash-looping node for dead
    assert re.search(r"^StartLimitIntervalSec=0$", text, re.M)
    # stopping the agent must not stop BIRD or the proxy it started
    assert re.search(r"^KillMode=process$", text, re.M)
