"""`fastpath cni install|status` and `fastpath agent`: standard library only at module level."""

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
    add_json_flag(ip)
    ip.set_defaults(func=_install)

    a = sub.add_parser("agent", help="run the node agent that serves fastpath-cni requests (foreground)")
    a.add_argument("--socket", metavar="PATH", default=None,
                   help="Unix socket to listen on (default /run/fastpath/fp[-INSTANCE]-agent.sock)")
    a.set_defaults(func=_agent)


def _install(args: argparse.Namespace) -> int:
    from fastpath.cni.install import install
    from fastpath.output import emit

    path = install(args.dir, args.name)
    emit(args, {"installed": path, "name": args.name},
         lambda d: f"installed the fastpath CNI plugin as {d['installed']}")
    return 0


def _agent(args: argparse.Namespace) -> int:
    from fastpath.cni import agent, wire

    return agent.run(args.socket or wire.socket_path())
