"""Who SRC and DST are: pod and node names of the demo cluster (fastpath.podnet.cluster),
addresses, or network namespace names of this instance; and how each namespace is called
in the output.

Route explainers (the seam for routing backends): when a lookup on a node finds no route,
the walk asks each explainer for one clause saying why. A routing backend of
fastpath.podnet.routing provides one by defining

    def explain_missing_route(self, cluster, node, peer, dst) -> str | None

`node` is the podnet Node without the route, `peer` the Node whose pod CIDR holds `dst`
(None if no node's does). Return a short clause ("the BGP session to node2 is down") or
None when the backend has nothing to say. `static_route_explainer` below is the one trace
itself supplies for any backend: it names the route the node should have.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from fastpath.errors import FastpathError, NotFound
from fastpath.podnet import cluster as podnet_cluster
from fastpath.podnet import routing
from fastpath.trace.model import Endpoint, Probe
from fastpath.trace.path import MissingRoute, RouteExplainer


@dataclass
class World:
    """What the names mean in this instance: endpoints by name, labels by netns."""
    cluster: podnet_cluster.Cluster | None = None
    labels: dict[str, str] = field(default_factory=dict)     # netns -> "pod x" / "node y"
    nodes: dict[str, str] = field(default_factory=dict)      # netns -> node name
    explainers: list[RouteExplainer] = field(default_factory=list)
    namespaces: list[str] | None = None   # the cluster's; None: every netns in scope



def load_cluster():
    """This instance's podnet cluster, or None."""
    return podnet_cluster.load()


def world(cluster=None) -> World:
    w = World(cluster=cluster)
    if cluster is None:
        return w
    # Only the cluster's own namespaces: without an instance tag the scope is every fp-*
    # netns on the machine, and another cluster may reuse the same addresses.
    w.namespaces = [cluster.underlay_netns, *(n.netns for n in cluster.nodes),
                    *(p.netns for p in cluster.pods)]
    w.labels[cluster.underlay_netns] = "underlay"
    for n in cluster.nodes:
        w.labels[n.netns] = f"node {n.name}"
        w.nodes[n.netns] = n.name
    for p in cluster.pods:
        w.labels[p.netns] = f"pod {p.name}"
        w.nodes[p.netns] = p.node
    w.explainers.append(static_route_explainer(cluster))
    backend = _routing_backend(cluster)
    explain = getattr(backend, "explain_missing_route", None)
    if explain is not None:
        w.explainers.insert(0, _backend_explainer(cluster, explain))
    return w


def _routing_backend(cluster):
    # An unknown backend only loses an explanation.
    try:
        return routing.get(getattr(cluster, "routing", None))
    except FastpathError:
        return None


def _backend_explainer(cluster, explain) -> RouteExplainer:
    def run(m: MissingRoute) -> str | None:
        if m.node is None:
            return None
        node = next((n for n in cluster.nodes if n.name == m.node), None)
        peer = cluster.node_of_ip(m.dst)
        if node is None or m.netns != node.netns:
            return None
        return explain(cluster, node, peer, m.dst)
    return run


def static_route_explainer(cluster) -> RouteExplainer:
    """Names the cross-node route a node lacks: `node1 should route 10.244.2.0/24 via
    10.255.0.2 (toward node2)`."""
    def run(m: MissingRoute) -> str | None:
        node = next((n for n in cluster.nodes if n.netns == m.netns), None)
        peer = cluster.node_of_ip(m.dst)
        if node is None or peer is None or peer.name == node.name:
            return None
        return (f"{node.name} has no route for {peer.name}'s pod CIDR {peer.pod_cidr} "
                f"(expected via {peer.underlay_ip}, {cluster.routing} routing)")
    return run


def resolve(name: str, probe: Probe, w: World, *, role: str) -> Endpoint:
    """SRC or DST given as a pod name, a node name, an IPv4 address or a netns name."""
    c = w.cluster
    if c is not None:
        pod = next((p for p in c.pods if p.name == name), None)
        if pod is not None:
            if not pod.ip:
                raise NotFound(f"pod {name} has no address yet (phase {pod.phase})")
            return Endpoint(pod.ip, pod.netns, f"pod {pod.name}", pod.node)
        node = next((n for n in c.nodes if n.name == name), None)
        if node is not None:
            return Endpoint(node.underlay_ip, node.netns, f"node {node.name}", node.name)
    try:
        ip = str(ipaddress.IPv4Address(name))
    except ValueError:
        ip = None
    if ip is not None:
        if c is not None:
            pod = c.pod_by_ip(ip)
            if pod is not None:
                return Endpoint(ip, pod.netns, f"pod {pod.name}", pod.node)
        for ns in probe.namespaces():
            if probe.snapshot(ns).owner(ip) is not None:
                return Endpoint(ip, ns, w.labels.get(ns, ns), w.nodes.get(ns))
        if role == "source":
            raise NotFound(f"source {ip} is not an address of any namespace of this instance")
        return Endpoint(ip, None, ip, None)
    if name in probe.namespaces():
        snap = probe.snapshot(name)
        for lk in snap.links.values():
            for a in lk.addrs:
                if lk.name != "lo" and not a.startswith("127."):
                    return Endpoint(a.split("/")[0], name, w.labels.get(name, name),
                                    w.nodes.get(name))
        raise NotFound(f"netns {name} has no IPv4 address to trace from")
    what = "no cluster here (run: fastpath up)" if c is None else \
        f"pods: {', '.join(p.name for p in c.pods) or 'none'}"
    raise NotFound(f"unknown {role} {name!r}: not a pod, node, address or netns of this "
                   f"instance ({what})")


def require_netns(probe: Probe, ep: Endpoint) -> None:
    """The endpoint's netns must still be there: a pod whose netns vanished underneath is
    named as such, not reported as a routing problem further down the path."""
    if ep.netns is None:
        return
    try:
        probe.snapshot(ep.netns)
    except NotFound as e:
        raise NotFound(f"{ep.label}: its network namespace {ep.netns} has vanished",
                       hint="fastpath status shows the cluster; pod del and pod add "
                            "recreate a pod") from e
