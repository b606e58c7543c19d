"""`fastpath bgp sessions [NODE] | start [NODE] | config NODE` (argparse only here;
handlers import the rest).

They work on whichever backend runs the demo cluster's BIRDs: the node agents (the
default: each agent runs its node's BIRD) or `--routing bgp` (BIRD driven centrally by
`up`). Both answer the same three verbs (`bgp_sessions`, `bgp_start`, `bgp_config`), so
this module asks the cluster's routing backend and never imports the agent.

`fastpath node add/del` and `fastpath up --route-reflector` live with the cluster
commands (fastpath.podnet.commands) and reach BGP through the routing backend."""

from __future__ import annotations


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("bgp", help="the cluster's BGP speakers (BIRD): sessions, start, config")
    bsub = p.add_subparsers(dest="bgp_cmd", metavar="ACTION", required=True)
    q = bsub.add_parser("sessions", help="every node's BGP sessions (or NODE's), read from BIRD's "
                                         "control socket; exit 1 when one is not established")
    q.add_argument("node", nargs="?", default=None)
    add_json_flag(q)
    q.set_defaults(func=cmd_sessions)
    q = bsub.add_parser("start", help="start the BIRD of every node (or NODE) whose BIRD is not "
                        "running (after a crash); running ones are left alone")
    q.add_argument("node", nargs="?", default=None)
    add_json_flag(q)
    q.set_defaults(func=cmd_start)
    q = bsub.add_parser("config", help="print the BIRD config of NODE (what its BIRD runs)")
    q.add_argument("node")
    q.set_defaults(func=cmd_config)


def _backend(node: str | None):
    from fastpath.errors import NotFound
    from fastpath.podnet import cluster, routing
    c = cluster.load()
    if c is None:
        raise NotFound("no demo cluster in this instance (fastpath up)",
                       hint="on a node agent's machine: fastpath status --node NODE")
    b = routing.get(c.routing)
    if not hasattr(b, "bgp_sessions"):
        raise NotFound(f"the cluster routes with {c.routing}: it has no BGP speakers")
    if node is not None:
        c.node(node)   # NotFound naming the nodes there are
    return c, b


def cmd_sessions(args) -> int:
    from fastpath.output import emit, table
    c, b = _backend(args.node)
    data = b.bgp_sessions(c, args.node)
    rows = [(k, s["peer"], s["state"], ((s.get("since") or "T-").split("T")[1] or None),
             s.get("imported"), s.get("exported"), s.get("last_error") or "")
            for k, v in data["nodes"].items() for s in v]
    emit(args, data, lambda d: table(f"BGP sessions ({d['topology']}, hold {d['hold_s']}s)",
                                     ["node", "peer", "state", "since", "received", "exported",
                                      "last error"], rows))
    return 1 if any(r[2] != "Established" for r in rows) else 0


def cmd_start(args) -> int:
    from fastpath.output import emit
    c, b = _backend(args.node)
    d = b.bgp_start(c, args.node)

    def render(d):
        lines = [f"started BIRD on {', '.join(d['started'])}" if d["started"] else "every BIRD was running"]
        lines += [f"node {n}: {why}" for n, why in d.get("not_started", {}).items()]
        if d.get("converged_s") is not None:
            lines.append(f"routes converged in {d['converged_s']:.2f}s")
        return "\n".join(lines)
    emit(args, d, render)
    return 1 if d.get("not_started") else 0


def cmd_config(args) -> int:
    import sys
    c, b = _backend(args.node)
    sys.stdout.write(b.bgp_config(c, args.node))
    return 0
