"""The `bgp` routing backend of the demo cluster (fastpath.podnet.routing): every node runs
BIRD 2 in its netns and learns the other nodes' pod CIDRs over iBGP.

The cluster model (fastpath.podnet.cluster) is the source of truth for nodes; the BGP
options chosen at `up` (route reflector, timers) are kept with the mesh in
fastpath.bgp.store, so `node add/del` later reuse them. Every change goes through
speakers.apply (validate, let BIRD parse every config, then reconfigure in place) and
returns once every node's kernel has every other node's route, so `fastpath check`
right after `up` or `node add` sees a converged cluster.
"""

from __future__ import annotations

from typing import Any

from fastpath.bgp import bird, speakers, store
from fastpath.bgp.config import render
from fastpath.bgp.model import BgpNode, Mesh, Timers
from fastpath.errors import FastpathError, UsageError
from fastpath.podnet import routing

# BIRD's kernel protocol tags its routes with RTPROT_BIRD (include/uapi/linux/rtnetlink.h).
RTPROT_BIRD = 12
CONVERGE_TIMEOUT = 30.0


def bgp_node(n) -> BgpNode:
    return BgpNode(name=n.name, netns=n.netns, address=n.underlay_ip, pod_cidr=n.pod_cidr,
                   router_id=n.router_id)


def mesh_of(cluster, reflector: str | None, timers: Timers) -> Mesh:
    return Mesh(tuple(bgp_node(n) for n in cluster.nodes), reflector=reflector, timers=timers)


class BgpRouting:
    name = "bgp"

    def __init__(self, route_reflector: str | None = None, bgp_hold: int | None = None) -> None:
        self.reflector = route_reflector
        t = Timers()
        if bgp_hold is not None:
            # keepalive a third of the hold time, as RFC 4271 10 suggests
            t = Timers(hold=bgp_hold, keepalive=max(1, bgp_hold // 3))
        t.validate()  # before `up` makes anything
        self.timers = t

    def _stored(self, cluster) -> Mesh:
        m = store.load()
        if m is None:  # a cluster made before BIRD state existed: defaults
            return mesh_of(cluster, None, self.timers)
        return m

    def setup(self, cluster) -> None:
        if self.reflector is not None and self.reflector not in {n.name for n in cluster.nodes}:
            raise UsageError(f"--route-reflector {self.reflector}: no such node "
                             f"(nodes: {', '.join(n.name for n in cluster.nodes)})")
        mesh = mesh_of(cluster, self.reflector, self.timers)
        speakers.apply(mesh, previous=store.load())
        speakers.wait_converged(mesh, CONVERGE_TIMEOUT)

    def check_node_removal(self, cluster, node) -> None:
        """Refuse, before anything changes, to remove the route reflector."""
        m = store.load()
        if m is not None:
            m.without_node(node.name)

    def node_added(self, cluster, node) -> None:
        old = self._stored(cluster)
        mesh = Mesh(tuple(bgp_node(n) for n in cluster.nodes), old.reflector, old.asn, old.timers)
        speakers.apply(mesh, previous=old)
        speakers.wait_converged(mesh, CONVERGE_TIMEOUT)

    def node_removed(self, cluster, node) -> None:
        old = store.load()
        if old is None or node.name not in {n.name for n in old.nodes}:
            return  # BGP never knew it (a node add that failed before BIRD started)
        mesh = old.without_node(node.name)
        mesh = Mesh(tuple(n for n in mesh.nodes if n.name in {c.name for c in cluster.nodes}),
                    mesh.reflector, mesh.asn, mesh.timers)
        if not mesh.nodes:
            speakers.stop_all(old)
            return
        speakers.apply(mesh, previous=old)

    def explain_missing_route(self, cluster, node, peer, dst) -> str | None:
        """For `fastpath trace` (fastpath.trace.endpoints): why `node` has no route to `dst`
        in `peer`'s pod CIDR, when BGP is the reason (a session on the path down, a BIRD
        not running); None when every session on the path is up."""
        if peer is None or peer.name == node.name:
            return None
        try:
            return speakers.route_cause(node.name, peer.name)
        except FastpathError:
            return None

    def teardown(self, cluster) -> None:
        speakers.stop_all()

    # ---- the `fastpath bgp` verbs (bgp/commands.py) --------------------------------------

    def bgp_sessions(self, cluster, node: str | None = None) -> dict:
        mesh = self._stored(cluster)
        nodes = {k: [s.to_dict() for s in v] for k, v in speakers.all_sessions(mesh).items()
                 if node is None or k == node}
        return {"topology": f"route reflector {mesh.reflector}" if mesh.reflector else "full mesh",
                "reflector": mesh.reflector, "hold_s": mesh.timers.hold, "nodes": nodes}

    def bgp_start(self, cluster, node: str | None = None) -> dict:
        mesh = self._stored(cluster)
        report = speakers.apply(mesh, previous=mesh)
        waited = speakers.wait_converged(mesh)
        d = report.to_dict()
        if node is not None:
            d["started"] = [n for n in d["started"] if n == node]
        return {**d, "converged_s": round(waited, 3)}

    def bgp_config(self, cluster, node: str) -> str:
        mesh = self._stored(cluster)
        return render(mesh, mesh.node(node).name, str(bird.BirdPaths.of(node).log))

    def status(self, cluster) -> dict:

        mesh = store.load()
        out = {}
        for n in cluster.nodes:
            entry: dict[str, Any] = {**routing.route_report(cluster, n, RTPROT_BIRD),
                                     "bird_pid": bird.running_pid(n.name), "sessions": []}
            if mesh is not None and n.name in {m.name for m in mesh.nodes}:
                entry["reflector"] = mesh.reflector
                entry["sessions"] = [s.to_dict() for s in speakers.node_sessions(mesh, n.name)]
            out[n.name] = entry
        return out
