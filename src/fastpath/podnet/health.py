"""What `fastpath status` reports beyond the state: each node's netns and FORWARD path,
each pod's wiring (fastpath.podnet.attach.inspect), as one-line problems."""

from __future__ import annotations

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
