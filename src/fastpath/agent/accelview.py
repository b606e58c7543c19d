"""What one node's agent puts in accel's local set, reconciled against what the set holds.
Pure.

The set (sockredir's fp_local4/6 LPM maps) says which peers are on this node, so that
their connections are redirected socket to socket. Several writers share it: `accel
enable --local` and the demo's `up --accel` (every demo node's pod CIDR and underlay
address, since the demo's nodes share one kernel), and each node's agent. An agent owns
exactly the /32s of its own node: its underlay address and its pods' addresses, inside
its pod CIDR. Reconciling removes what it owns and no longer wants (pods deleted, even
while the agent was down) and adds what is missing; it never touches another writer's
prefixes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def wanted(node_ip: str, pod_ips: Iterable[str]) -> set[Net]:
    return {ipaddress.ip_network(f"{ip}/32") for ip in [node_ip, *pod_ips]}


def plan(current: Iterable[Net], node_ip: str, pod_cidr: str | None,
         want: set[Net]) -> tuple[list[Net], list[Net]]:
    """(to add, to remove): `want` less what is there, and this node's own /32s that are
    there and not wanted."""
    have = set(current)
    me = ipaddress.ip_network(f"{node_ip}/32")
    block = ipaddress.ip_network(pod_cidr) if pod_cidr else None
    mine = {n for n in have if n.version == 4 and n.prefixlen == 32
            and (n == me or (block is not None and n.subnet_of(block)))}  # type: ignore[arg-type]
    return sorted(want - have), sorted(mine - want)
