"""Routing-mode pod networking: a netns and a veth pair per pod, /32 routes on the node,
no overlay, no NAT.

Seams other packages use:
- `fastpath.podnet.ipam`     generic IPAM in SQLite (pools by CIDR, owners are strings)
- `fastpath.podnet.attach`   wire / unwire / inspect ONE pod (fastpath pod add, the CNI plugin)
- `fastpath.podnet.routing`  cross-node routing backends by name (static here; bgp elsewhere)
- `fastpath.podnet.cluster`  the demo cluster's model and its state (nodes, pods)
- `fastpath.podnet.rtnl`     an rtnetlink socket bound to one netns (reuse it across pods)

Network namespaces themselves are shared plumbing (`fastpath.kernel.netns`).

Inside: `plan` (pure: pod wiring, cluster layout), `netfilter` (FORWARD DROP + FP-FORWARD),
`sysctl`, `build` (up / node / pod add-del with rollback), `check` (ICMP+TCP matrix),
`health` (status problems), `sweep` (fastpath down), `commands` (the CLI).
"""
