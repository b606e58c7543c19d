"""sockredir in the demo cluster: `fastpath up --accel` enables accel with every node's pod
CIDR and underlay address as local peers (the demo's nodes all share this kernel, so
a sockhash joins their sockets too); `fastpath exec` puts the command in the accel cgroup
when accel is enabled, so pod processes are accelerated."""

from __future__ import annotations

import ipaddress

from fastpath.sockredir import cgroup, loader, preflight


def enable_for(cluster, pre=None) -> dict:
    """Enable accel for the cluster, or add its prefixes when accel is already enabled.
    `pre` is the preflight `fastpath up` ran before building anything (run here if None)."""

    nets = [ipaddress.ip_network(n.pod_cidr) for n in cluster.nodes]
    nets += [ipaddress.ip_network(n.underlay_ip) for n in cluster.nodes]
    if loader.is_enabled():
        return {"cgroup": (loader.attachment() or {}).get("cgroup"),
                "local": loader.set_local(nets, []), "already_enabled": True}
    pre = pre or preflight.run()
    res = loader.enable(cgroup.default_path(), nets, bound=pre.bound,
                        selftest=pre.selftest.to_dict() if pre.selftest else None)
    return {**res, "notes": pre.notes}


def join_if_enabled() -> str | None:
    """Move the calling process into the accel cgroup when accel is enabled; its path."""

    if not loader.is_enabled():
        return None
    att = loader.attachment()
    if not att:
        return None
    cgroup.move(0, att["cgroup"])
    return att["cgroup"]
