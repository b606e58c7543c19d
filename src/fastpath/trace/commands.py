"""`fastpath trace SRC DST [--port P] [--proto tcp|icmp] [--json]`."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastpath.output import add_json_flag
    p = sub.add_parser(
        "trace", help="explain one packet's path hop by hop, and why it is dropped",
        description="Follow one packet from SRC to DST (and its reply back) through every "
                    "network namespace: the route lookup's answer, the netfilter hooks and "
                    "their verdicts, link state, reverse-path filtering and forwarding. "
                    "Exits 1 and names the cause in one line when the path is broken.")
    p.add_argument("src", metavar="SRC", help="pod or node name, IPv4 address, or netns")
    p.add_argument("dst", metavar="DST", help="pod or node name, IPv4 address, or netns")
    p.add_argument("--port", type=_port, default=None,
                   help="destination port (tcp; default 80): also says whether anything "
                        "listens there")
    p.add_argument("--proto", choices=("tcp", "icmp"), default="tcp")
    p.add_argument("--no-reply", dest="reply", action="store_false",
                   help="trace the request only, not the reply's way back")
    add_json_flag(p)
    p.set_defaults(func=run)


def _port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {s!r}") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} out of range 1-65535")
    return v


def run(args) -> int:
    from fastpath.errors import UsageError
    from fastpath.output import emit
    from fastpath.trace import endpoints, path, render
    from fastpath.trace.collect import LiveProbe

    if args.proto == "icmp" and args.port is not None:
        raise UsageError("--port applies to tcp only")
    port = None if args.proto == "icmp" else (args.port or 80)
    w = endpoints.world(endpoints.load_cluster())
    with LiveProbe(w.namespaces) as probe:
        src = endpoints.resolve(args.src, probe, w, role="source")
        dst = endpoints.resolve(args.dst, probe, w, role="destination")
        for ep in (src, dst):
            endpoints.require_netns(probe, ep)
        # a listener is asked about only for a port the user named: without --port, trace
        # answers for the path (port 80 stands in for the rules that match on ports)
        tr = path.walk(probe, src, dst, proto=args.proto, port=port, labels=w.labels,
                       nodes=w.nodes, explainers=w.explainers, reply=args.reply,
                       listener=args.port is not None)
    emit(args, tr.to_dict(), render.render)
    # Broken (a cause named) exits 1; a packet that leaves what trace can see is not.
    return 1 if tr.broken_by is not None else 0
