"""BGP route exchange between nodes with BIRD 2: each node announces its pod CIDR as one
aggregate and installs the others' routes. See model (the mesh, validation), config
(bird.conf rendering), control (the control socket), bird (processes), speakers (the
cluster's BIRDs as a whole), routing (the `bgp` backend of the demo cluster).

For fastpath trace: BgpRouting.explain_missing_route (the routing-backend seam trace
calls when a node has no route to a pod), and directly:
    route_cause(src_node, dst_node) -> str | None   one-line BGP cause of a missing route
    session_down(node, peer) -> bool                 is node's BGP session to peer down
"""

from __future__ import annotations

from fastpath.bgp import speakers


def route_cause(src_node: str, dst_node: str) -> str | None:
    """Why `src_node` may lack its route to `dst_node`'s pod CIDR, as far as BGP goes (a
    session down on the path, or a BIRD not running), else None. None too when the
    cluster's routing is not bgp."""
    return speakers.route_cause(src_node, dst_node)


def session_down(node: str, peer: str) -> bool:
    """Whether `node`'s BGP session to `peer` is not Established (a stopped BIRD counts)."""
    return speakers.session_down(node, peer)
