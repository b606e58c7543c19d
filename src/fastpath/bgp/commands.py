"""`fastpath bgp sessions | start | config` (argparse only here; handlers import the rest).

`fastpath node add/del` and `fastpath up --route-reflector` live with the cluster
commands (fastpath.podnet.commands) and reach BGP through the routing backend
(fastpath.bgp.routing)."""

from __future__ import annotations


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("bgp", help="the cluster's BGP speakers (BIRD): sessions, start, config")
    bsub = p.add_subparsers(dest="bgp_cmd", metavar="ACTION", required=True)
    q = bsub.add_parser("sessions", help="every node's BGP sessions, read from BIRD's control socket")
    add_json_flag(q)
    q.set_defaults(func=cmd_sessions)
    q = bsub.add_parser("start", help="start the BIRD of every node whose BIRD is not running "
                        "(after a crash); running ones are left alone")
    add_json_flag(q)
    q.set_defaults(func=cmd_start)
    q = bsub.add_parser("config", help="print the BIRD config fastpath renders for NODE")
    q.add_argument("node")
    q.set_defaults(func=cmd_config)


def _mesh():
    from fastpath.bgp import store
    from fastpath.errors import NotFound
    m = store.load()
    if m is None:
        raise NotFound("no BGP speakers in this instance (fastpath up, with --routing bgp)")
    return m


def cmd_sessions(args) -> int:
    from fastpath.bgp import speakers
    from fastpath.output import emit, table
    mesh = _mesh()
    data = {"reflector": mesh.reflector, "hold_s": mesh.timers.hold,
            "nodes": {k: [s.to_dict() for s in v] for k, v in speakers.all_sessions(mesh).items()}}
    rows = [(k, s["peer"], s["state"], (s["since"] or "T-").split("T")[1] or None, s["imported"],
             s["exported"],
             s["last_error"] or "") for k, v in data["nodes"].items() for s in v]
    topo = f"route reflector {mesh.reflector}" if mesh.reflector else "full mesh"
    emit(args, data, lambda d: table(f"BGP sessions ({topo}, hold {mesh.timers.hold}s)",
                                     ["node", "peer", "state", "since", "received", "exported",
                                      "last error"], rows))
    down = [r for r in rows if r[2] != "Established"]
    return 1 if down else 0


def cmd_start(args) -> int:
    from fastpath.bgp import speakers
    from fastpath.output import emit
    mesh = _mesh()
    report = speakers.apply(mesh, previous=mesh)
    waited = speakers.wait_converged(mesh)
    d = {**report.to_dict(), "converged_s": round(waited, 3)}
    emit(args, d, lambda d: (f"started BIRD on {', '.join(d['started'])}" if d["started"]
                             else "every BIRD was running") + f"; routes converged in {waited:.2f}s")
    return 0


def cmd_config(args) -> int:
    import sys

    from fastpath.bgp import bird
    from fastpath.bgp.config import render
    mesh = _mesh()
    sys.stdout.write(render(mesh, mesh.node(args.node).name, str(bird.BirdPaths.of(args.node).log)))
    return 0
