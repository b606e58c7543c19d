"""What one node's BIRD should say, from the cluster's View. Pure.

Every registered node with a pod CIDR takes part, whether its agent is alive or not:
peering follows registration and BGP, never the agent's lease (as in Calico and
kube-router). An agent that dies leaves its BIRD and pods running, so its sessions and
routes stay; a node that stops for real is withdrawn by BGP itself at hold-time expiry,
and `node del` removes the registration and with it the peer everywhere. The node itself
is always in (its own agent is the one asking).
"""

from __future__ import annotations

from fastpath.bgp.model import BgpNode, ExternalPeer, Mesh, Timers
from fastpath.cluster.objects import Node, View


def bgp_node(n: Node) -> BgpNode:
    assert n.pod_cidr is not None
    return BgpNode(name=n.name, netns="-", address=n.ip, pod_cidr=n.pod_cidr, router_id=n.rid,
                   asn=n.asn)


def mesh_for(view: View, me: Node, timers: Timers | None = None) -> Mesh:
    nodes = {n.name: n for n in view.routed_nodes()}
    nodes[me.name] = me
    cfg = view.bgp
    reflector = next((r for r in cfg.reflectors if r in nodes), None)
    external = tuple(ExternalPeer(name=p.name, address=p.address, asn=p.asn, node=p.node,
                                  password=p.password)
                     for p in view.peers_of(me.name) if p.node in (None, me.name))
    if timers is None:
        timers = Timers(hold=cfg.hold, keepalive=max(1, cfg.hold // 3)) if cfg.hold != 3 else Timers()
    return Mesh(nodes=tuple(bgp_node(nodes[k]) for k in sorted(nodes)), reflector=reflector,
                asn=cfg.asn, timers=timers, external=external, node_mesh=cfg.mesh)
