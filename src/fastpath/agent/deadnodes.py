"""Which registered nodes have a dead agent, since when, and which are gone. Pure.

A node's agent is dead when the node is registered but holds no `alive` key (its lease
ran out). That marks the node's control plane as dead, in status and metrics, and changes
nothing in the data plane: its BIRD and pods go on, so peering and routes stay (see
cluster/objects.py). Only after `grace` seconds dead is the node *gone* for services:
its pods leave their backends, as Kubernetes evicts a NotReady node's pods after a
timeout. Until then the proxy's health checks decide whether its backends answer.

The clock is this agent's own: each agent starts counting when it first sees the node
dead (a restarted agent starts again), so no write to the datastore is needed and no two
agents must agree on a time.
"""

from __future__ import annotations

from fastpath.cluster.objects import View

DEFAULT_GRACE = 300.0   # seconds, Kubernetes' pod eviction timeout


class DeadNodes:
    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.since: dict[str, float] = {}   # node -> when this agent first saw it dead

    def observe(self, view: View, now: float, me: str | None = None) -> bool:
        """Note which nodes are dead in `view` at `now`; True when that set changed."""
        dead = {n for n in view.dead_nodes() if n != me}
        before = set(self.since)
        for n in before - dead:
            del self.since[n]
        for n in dead - before:
            self.since[n] = now
        return dead != before

    def gone(self, now: float) -> set[str]:
        """Nodes dead for at least the grace: their pods leave the services."""
        return {n for n, t in self.since.items() if now - t >= self.grace}

    def next_change(self, now: float) -> float | None:
        """When the next node becomes gone (None: no dead node still within its grace)."""
        due = [t + self.grace for t in self.since.values() if t + self.grace > now]
        return min(due) if due else None

    def report(self, now: float) -> list[dict]:
        return [{"node": n, "dead_since": t, "gone": now - t >= self.grace}
                for n, t in sorted(self.since.items())]
