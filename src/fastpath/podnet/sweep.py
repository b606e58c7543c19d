"""podnet's part of `fastpath down`: every netns this instance's podnet made (underlay,
nodes, pods, bench hosts), the processes in them, and its state rows.

Found by name (fastpath.naming scope) as well as through state, so it works after a crash
or a half-made `up`; idempotent. Deleting a netns takes its veths, bridge, routes and
iptables chains with it: nothing podnet makes lives outside its own namespaces.
"""

from __future__ import annotations

import re
from collections.abc import Set

from fastpath import naming
from fastpath.errors import FastpathError
from fastpath.kernel import netns
from fastpath.podnet import cluster as cl
from fastpath.podnet import routing
from fastpath.podnet.build import kill_processes_in
from fastpath.podnet.ipam import Ipam

# netns names podnet makes: naming.name("underlay"), naming.name("nodeN"),
# naming.name("pod", NAME), naming.name("bench-...") (nodes named by `node add NAME`
# are found through the state)
_OURS = re.compile(r"^(underlay|node\d+|pod-[a-z0-9-]+|bench-[a-z0-9-]+)$")


def ours(ns_name: str, known: Set[str] = frozenset()) -> bool:
    if ns_name in known:
        return True
    if not naming.owned(ns_name):
        return False
    return bool(_OURS.match(ns_name[len(naming.scope()):]))


def sweep() -> list[str]:

    removed: list[str] = []
    conn = cl.connect()
    try:
        c = cl.load(conn)
        known = set()
        if c is not None:
            known = {n.netns for n in c.nodes} | {p.netns for p in c.pods} | {c.underlay_netns}
            try:
                routing.get(c.routing).teardown(c)
            except FastpathError:
                pass  # the netns go below anyway
        names = [n for n in netns.list_names() if ours(n, known)]
        # pods first, then nodes, then the underlay: the order `up` made them in, reversed
        names.sort(key=lambda n: (0 if "-pod-" in n else 2 if n.endswith("underlay") else 1, n))
        for n in names:
            kill_processes_in(n)
            if netns.delete(n):
                removed.append(f"netns {n}")
        if c is not None:
            removed.append(f"cluster state {naming.scope()}*")
        cl.forget(conn)
        if Ipam(conn).forget_space():
            removed.append("IPAM leases")
    finally:
        conn.close()
    return removed
