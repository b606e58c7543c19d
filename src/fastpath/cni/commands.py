"""`fastpath cni install|list`: standard library only at module level."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("cni", help="the CNI plugin: install it into a runtime's plugin directory")
    csub = p.add_subparsers(dest="cni_command", metavar="COMMAND", required=True)
    ip = csub.add_parser("install", help="put the `fastpath` plugin into a CNI plugin directory")
    ip.add_argument("--dir", required=True, metavar="DIR",
                    help="the runtime's CNI plugin directory (e.g. /opt/cni/bin)")
    ip.add_argument("--name", default="fastpath", help="file name (the config's type), default fastpath")
    ip.add_argument("--launcher", choices=("auto", "native", "python"), default="auto",
                    help="native: a compiled client that starts in ~1 ms and hands over to "
                         "python when no agent runs; python: a script; auto: native if a C "
                         "compiler is there (default)")
    add_json_flag(ip)
    ip.set_defaults(func=_install)

    lp = csub.add_parser("list", help="the pods attached through the CNI plugin on this node")
    lp.add_argument("--network", default=None, help="only this network (the config's name)")
    add_json_flag(lp)
    lp.set_defaults(func=_list)


def _install(args: argparse.Namespace) -> int:
    from fastpath.cni.install import install_report
    from fastpath.output import emit

    report = install_report(args.dir, args.name, args.launcher)
    emit(args, report, lambda d: f"installed the fastpath CNI plugin ({d['launcher']} launcher) "
                                 f"as {d['installed']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from fastpath import state
    from fastpath.output import emit, table

    rows = []
    if state.db_path().exists():
        from fastpath.cni.store import Store
        conn = state.connect()
        rows = [] if not Store.exists(conn) else [{"network": a.network,
                                                   "container_id": a.container_id,
                                                   "ifname": a.ifname,
                 "address": a.address, "host_link": a.host_link, "netns": a.netns,
                 "ipam": a.ipam or "fastpath"} for a in Store(conn).list(args.network)]
    emit(args, rows, lambda rs: table("CNI attachments", ["network", "container", "ifname", "address",
                                                          "host link", "netns", "ipam"],
                                      [(r["network"], r["container_id"][:16], r["ifname"],
                                        r["address"], r["host_link"], r["netns"], r["ipam"])
                                       for r in rs]))
    return 0
