"""What `fastpath status` reports beyond the state: each node's netns and FORWARD path,
each pod's wiring (fastpath.podnet.attach.inspect), as one-line problems; and the one
health verdict (`verdict`), computed from the very facts the status tables show.

`verdict` is pure. Status is ok only when nothing in any table is missing, down or
stale: a pod or node wired wrong, a route a node should have and lacks, a BGP session
that is not established (or that BIRD does not have at all), a node agent that is not
running or not ready, a BIRD that is not running, a datastore member that does not
answer. Each is one line naming the node, peer or member, and `status` exits non-zero
while there is any.
"""

from __future__ import annotations

import time

from fastpath.errors import FastpathError
from fastpath.kernel import netns
from fastpath.podnet import attach, netfilter
from fastpath.podnet.rtnl import Rtnl


def inspect_cluster(c) -> dict:
    nodes: dict[str, list[str]] = {}
    pods: dict[str, list[str]] = {}
    if not netns.exists(c.underlay_netns):
        nodes["underlay"] = [f"netns {c.underlay_netns} is missing"]
    for n in c.nodes:
        probs = nodes.setdefault(n.name, [])
        try:
            with Rtnl(n.netns) as r:
                st = netfilter.forward_status(r.ns)
                if not (st["jump"] and st["accepts_pods"]):
                    probs.append(f"FORWARD in netns {n.netns} does not jump to an intact "
                                 f"{netfilter.FORWARD_CHAIN} (policy {st['policy']})")
                for p in c.pods_on(n.name):
                    if p.phase != "ready" or not p.ip:
                        pods[p.name] = [f"pod {p.name} is {p.phase}"]
                        continue
                    try:
                        pods[p.name] = attach.inspect(r, p.netns, host_ifname=p.host_ifname,
                                                      address=f"{p.ip}/32", ifname=p.ifname,
                                                      check_forward=False)
                    except FastpathError as e:
                        pods[p.name] = [str(e)]
        except FastpathError as e:
            probs.append(str(e))
            for p in c.pods_on(n.name):
                pods[p.name] = [f"node {n.name} is unreachable"]
    ok = not any(nodes.values()) and not any(pods.values())
    return {"ok": ok, "nodes": nodes, "pods": pods}


def verdict(wiring: dict, routes: dict, datastore: dict | None = None,
            now: float | None = None) -> dict:
    """{"ok", "problems"} from inspect_cluster's `wiring`, a routing backend's per-node
    `routes` (status()), and the datastore's health (cluster.store.health), if any."""
    now = time.time() if now is None else now
    probs = [f"node {k}: {x}" for k, v in wiring.get("nodes", {}).items() for x in v]
    probs += [f"pod {k}: {x}" for k, v in wiring.get("pods", {}).items() for x in v]
    for node, r in sorted(routes.items()):
        for m in r.get("missing", []):
            probs.append(f"node {node}: route {m} is missing")
        if "agent_pid" in r:
            if not r["agent_pid"]:
                since = r.get("reported")
                ago = f" (last report {now - since:.0f}s ago)" if since else ""
                probs.append(f"node {node}: its agent is not running{ago}")
            elif not r.get("ready"):
                why = "; ".join(r.get("problems") or []) or "no reason given"
                probs.append(f"node {node}: its agent is not ready: {why}")
        if "bird_pid" in r and not r["bird_pid"]:
            probs.append(f"node {node}: BIRD is not running")
        for s in r.get("sessions", []):
            if not s.get("established"):
                probs.append(f"node {node}: BGP session with {s['peer']} is {s['state']}")
    if datastore is not None:
        for m in datastore.get("members", []):
            if not m["ok"]:
                probs.append(f"datastore {m['endpoint'].removeprefix('http://')}: {m['error']}")
    return {"ok": not probs, "problems": probs}
