"""`fastpath down` for the demo's agent-side processes that live outside any node netns
or outlive a crashed `up`: the ToR router (FRR) and the demo's etcd members, found by the
instance scope. Agents, BIRDs and proxies live in node namespaces and go with them
(fastpath.podnet.sweep); the demo's datastore goes with its cluster (AgentRouting.teardown)."""

from __future__ import annotations

import shutil

from fastpath.agent import demo
from fastpath.bgp import tor
from fastpath.cluster.etcd_server import kill_recorded


def sweep() -> list[str]:
    out = [f"FRR pid {p}" for p in tor.stop()]
    d = demo.etcd_dir()
    if d.exists():
        out += [f"etcd pid {p}" for p in kill_recorded(d)]
        shutil.rmtree(d, ignore_errors=True)
    return out
