"""`fastpath proxy run|check|status|reload|stop`: the node proxy (splice + pipe pool)."""

from __future__ import annotations

import argparse

DEFAULT_NAME = "node"


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("proxy", help="the node L4 proxy: splice(2) forwarding with a pipe pool")
    psub = p.add_subparsers(dest="proxy_cmd", metavar="CMD", required=True)

    r = psub.add_parser("run", help="run the proxy in the foreground (SIGHUP reloads, "
                                    "SIGTERM drains and exits)")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", "-c", metavar="FILE")
    src.add_argument("--program", action="store_true",
                     help="no file: a node agent hands over its service table (fastpath agent --proxy)")
    r.add_argument("--name", default=DEFAULT_NAME, help="proxy name (default: node)")
    r.add_argument("--workers", type=int, default=None, help="worker processes (default: "
                                                             "the config's, else one per CPU)")
    r.add_argument("--mode", choices=("splice", "copy", "auto"), default=None,
                   help="forwarding mode, overrides the config's")
    r.add_argument("--netns", metavar="NAME", default=None,
                   help="run inside this network namespace (/run/netns/NAME), e.g. a node's")
    r.add_argument("--drain-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long connections of a stopped or retired worker may run before "
                        "they are reset (default: the config's, 30 s)")
    r.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    r.set_defaults(func=_run)

    c = psub.add_parser("check", help="validate a config file without running it")
    c.add_argument("--config", "-c", required=True, metavar="FILE")
    add_json_flag(c)
    c.set_defaults(func=_check)

    s = psub.add_parser("status", help="workers, connections, backends and pipe pool counters")
    s.add_argument("--name", default=None, help="one proxy (default: all of this instance)")
    add_json_flag(s)
    s.set_defaults(func=_status)

    rl = psub.add_parser("reload", help="re-read the config (a bad one is refused, the "
                                        "running one stays)")
    rl.add_argument("--name", default=DEFAULT_NAME)
    rl.add_argument("--timeout", type=float, default=10.0)
    add_json_flag(rl)
    rl.set_defaults(func=_reload)

    d = psub.add_parser("demo", help="on the demo cluster (fastpath up): a proxy per node on "
                                     "a service VIP, a backend in every pod, probed from every pod")
    d.add_argument("--vip", default="10.96.0.10")
    d.add_argument("--port", type=int, default=80)
    d.add_argument("--workers", type=int, default=1)
    d.add_argument("--mode", choices=("splice", "copy", "auto"), default="auto")
    add_json_flag(d)
    d.set_defaults(func=_demo)

    st = psub.add_parser("stop", help="drain and stop a proxy")
    st.add_argument("--name", default=DEFAULT_NAME)
    st.add_argument("--timeout", type=float, default=40.0)
    add_json_flag(st)
    st.set_defaults(func=_stop)


def _run(args: argparse.Namespace) -> int:
    import logging
    import os

    from fastpath.proxy import master
    logging.basicConfig(level=args.log_level.upper(),
                        format="fastpath-proxy[%(process)d] %(levelname)s %(message)s")
    if args.workers is not None and args.workers < 1:
        from fastpath.errors import UsageError
        raise UsageError("--workers must be at least 1")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.netns:
        master.enter_netns(args.netns)
    return master.run(None if args.program else args.config, args.name, args.workers, args.mode,
                      args.drain_timeout)


def _check(args: argparse.Namespace) -> int:
    from fastpath.output import emit
    from fastpath.proxy import config
    cfg = config.load(args.config)
    emit(args, config.to_dict(cfg),
         lambda d: f"{args.config}: ok, {len(d['services'])} services, mode {d['mode']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from fastpath.output import emit
    from fastpath.proxy import status
    data = status.collect(args.name)
    emit(args, data, status.render)
    return 0


def _reload(args: argparse.Namespace) -> int:
    from fastpath.output import emit
    from fastpath.proxy import status
    res = status.reload(args.name, args.timeout)
    emit(args, res, lambda d: f"proxy {args.name}: reloaded, generation {d['generation']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from fastpath.output import emit
    from fastpath.proxy import status
    res = status.stop(args.name, args.timeout)
    emit(args, res, lambda d: f"proxy {args.name}: stopped (pid {d['pid']})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fastpath.output import emit
    from fastpath.proxy import demo
    res = demo.up(args.vip, args.port, args.workers, args.mode)
    emit(args, res, render_demo)
    return 0 if res["ok"] else 1


def render_demo(d: dict):
    from rich.console import Group

    from fastpath.output import table
    return Group(f"service VIP {d['vip']}: a proxy per node, a backend per pod",
                 table("probes from every pod", ["pod", "node", "answered by", "ok"],
                       [(r["pod"], r["node"], r["answer"], "yes" if r["ok"] else "NO")
                        for r in d["probes"]]))

