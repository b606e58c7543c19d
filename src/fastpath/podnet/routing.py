"""Cross-node routing: how each node learns the other nodes' pod CIDRs.

The cluster code (fastpath.podnet.build) calls only this interface:

    backend = routing.get("static")        # or "bgp" (fastpath.bgp), by name
    backend.setup(cluster)                  # after `fastpath up` made nodes and pods
    backend.node_added(cluster, node)       # cluster already holds the node
    backend.node_removed(cluster, node)     # cluster no longer holds it
    backend.teardown(cluster)               # before the nodes go away (may be a no-op)
    backend.status(cluster) -> dict         # per node: expected / installed / missing routes

Backends are stateless between calls: every CLI run reloads the cluster from state, so a
backend keeps what it needs in the kernel (routes, tagged with a protocol number) or in
its own state/processes. `register(name, "module:Class")` adds one; a backend whose module
is not installed is simply not available. DEFAULT is what `fastpath up` uses.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import socket
from typing import Protocol

from fastpath.errors import NotFound, UsageError
from fastpath.podnet.plan import static_routes
from fastpath.podnet.rtnl import Rtnl

# Routes fastpath's static backend installs carry this rtnetlink protocol number
# (rtm_protocol; iproute2 shows it as "proto 102"), so status/teardown find exactly them.
RTPROT_FASTPATH_STATIC = 102

_BACKENDS: dict[str, str] = {
    "static": "fastpath.podnet.routing:StaticRouting",
    "bgp": "fastpath.bgp.routing:BgpRouting",
    "agent": "fastpath.agent.demo:AgentRouting",
}
DEFAULT = "agent"


class RoutingBackend(Protocol):
    name: str

    def setup(self, cluster) -> None: ...
    def node_added(self, cluster, node) -> None: ...
    def node_removed(self, cluster, node) -> None: ...
    def teardown(self, cluster) -> None: ...
    def status(self, cluster) -> dict: ...


def register(name: str, target: str) -> None:
    """Make `name` resolve to `target` ("module:Class")."""
    _BACKENDS[name] = target


def available() -> list[str]:
    out = []
    for name, target in _BACKENDS.items():
        mod = target.split(":")[0]
        try:
            if importlib.util.find_spec(mod) is not None:
                out.append(name)
        except ModuleNotFoundError:
            pass
    return out


def get(name: str | None = None, **options) -> RoutingBackend:
    """The backend `name`; `options` (e.g. route_reflector= for bgp) go to its constructor."""
    name = name or DEFAULT
    if name not in available():
        raise UsageError(f"unknown routing backend {name!r} (available: {', '.join(available())})")
    mod, cls = _BACKENDS[name].split(":")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return getattr(importlib.import_module(mod), cls)(**options)
    except TypeError:
        if not options:
            raise
        raise UsageError(f"routing {name} takes no option "
                         f"{', '.join('--' + k.replace('_', '-') for k in options)}") from None


def expected_routes(cluster, node) -> list[tuple[str, str]]:
    """(pod CIDR, via) every node should have toward the others: pure, for any backend."""
    cidrs = {n.name: (ipaddress.IPv4Network(n.pod_cidr), ipaddress.IPv4Address(n.underlay_ip))
             for n in cluster.nodes}
    return [(str(c), str(v)) for c, v in static_routes(node.name, cidrs)]


def route_report(cluster, node, proto: int) -> dict[str, list[str]]:
    """The node's expected routes to the other nodes' pod CIDRs, those of protocol `proto`
    it has, and the expected ones it lacks (by destination), each as "DST via GW"."""
    want = expected_routes(cluster, node)
    try:
        with Rtnl(node.netns) as r:
            have = installed_routes(r, proto)
    except NotFound:
        have = []
    have_dst = {d for d, _ in have}
    return {"expected": [f"{d} via {v}" for d, v in want],
            "installed": [f"{d} via {v}" for d, v in have],
            "missing": [f"{d} via {v}" for d, v in want if d not in have_dst]}


def installed_routes(rtnl, proto: int | None = None) -> list[tuple[str, str]]:
    """(dst/len, gateway) of the main table's gatewayed routes (of one protocol)."""
    out = []
    for m in rtnl.call("list routes", "route", "dump", family=socket.AF_INET):
        if (m.get("RTA_TABLE") or m.get("table")) != 254 or not m.get("RTA_GATEWAY"):
            continue
        if proto is not None and m["proto"] != proto:
            continue
        out.append((f"{m.get('RTA_DST') or '0.0.0.0'}/{m['dst_len']}", m.get("RTA_GATEWAY")))
    return out


class StaticRouting:
    """Static routes: on each node, every other node's pod CIDR via its underlay address."""

    name = "static"

    def _apply(self, cluster, node) -> None:
        with Rtnl(node.netns) as r:
            dev = r.index(node.underlay_ifname)
            for dst, via in expected_routes(cluster, node):
                r.call(f"route {dst} via {via} on {node.name}", "route", "replace", dst=dst,
                       gateway=via, oif=dev, proto=RTPROT_FASTPATH_STATIC)

    def setup(self, cluster) -> None:
        for n in cluster.nodes:
            self._apply(cluster, n)

    def node_added(self, cluster, node) -> None:
        for n in cluster.nodes:
            self._apply(cluster, n)

    def node_removed(self, cluster, node) -> None:
        for n in cluster.nodes:
            if n.name == node.name:
                continue
            with Rtnl(n.netns) as r:
                for dst, via in installed_routes(r, RTPROT_FASTPATH_STATIC):
                    if dst == node.pod_cidr:
                        r.call(f"delete route {dst} on {n.name}", "route", "del", dst=dst,
                               gateway=via, proto=RTPROT_FASTPATH_STATIC)

    def teardown(self, cluster) -> None:
        for n in cluster.nodes:
            try:
                with Rtnl(n.netns) as r:
                    for dst, via in installed_routes(r, RTPROT_FASTPATH_STATIC):
                        r.call(f"delete route {dst} on {n.name}", "route", "del", dst=dst,
                               gateway=via, proto=RTPROT_FASTPATH_STATIC)
            except NotFound:
                continue

    def status(self, cluster) -> dict:
        out = {}
        for n in cluster.nodes:
            want = expected_routes(cluster, n)
            try:
                with Rtnl(n.netns) as r:
                    have = installed_routes(r)
            except NotFound:
                have = []
            out[n.name] = {"expected": [f"{d} via {v}" for d, v in want],
                           "installed": [f"{d} via {v}" for d, v in have],
                           "missing": [f"{d} via {v}" for d, v in want if (d, v) not in have]}
        return out
