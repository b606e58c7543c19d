"""`fastpath agent`: the node daemon (with --node or --config), or, without them, the CNI
server alone (a node outside any cluster). Standard library only at module level."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    a = sub.add_parser("agent", help="run the node agent (foreground): with --node it owns the "
                                     "node (datastore, BIRD, services, CNI); without, it serves CNI only")
    a.add_argument("--node", default=None, help="this node's name in the cluster")
    a.add_argument("--config", metavar="FILE", default=None,
                   help="a JSON file of settings (flags win); see fastpath.agent.config")
    a.add_argument("--datastore", metavar="URL", default=None,
                   help="sqlite:///PATH or etcd://HOST:PORT[,...] (default: FASTPATH_DATASTORE, "
                        "else the state dir's cluster.db)")
    a.add_argument("--address", metavar="ADDRESS/PREFIX", default=None,
                   help="the underlay address BGP speaks from (default: the node's first IPv4 address)")
    a.add_argument("--asn", type=int, default=None, help="this node's AS number (default 64512)")
    a.add_argument("--router-id", default=None, help="BGP router id (default: the underlay address)")
    a.add_argument("--pod-cidr", default=None, help="this node's pod CIDR (default: a block from a pool)")
    a.add_argument("--pool", default=None, help="the IP pool to take a block from (default: any)")
    a.add_argument("--label", action="append", default=None, metavar="KEY=VALUE",
                   help="a node label (repeatable)")
    a.add_argument("--health", default=None, metavar="HOST:PORT",
                   help="/healthz, /readyz and /metrics (default 127.0.0.1:9099; '' turns them off)")
    a.add_argument("--lease-ttl", type=int, default=None, help="node lease in seconds (default 10)")
    a.add_argument("--no-bird", action="store_true", help="do not run BIRD (routes come from elsewhere)")
    a.add_argument("--proxy", action="store_true",
                   help="run the node proxy and program it with the cluster's services (VIPs on lo)")
    a.add_argument("--proxy-workers", type=int, default=None, metavar="N",
                   help="the node proxy's worker processes (default: one per CPU)")
    a.add_argument("--socket", metavar="PATH", default=None,
                   help="CNI Unix socket (default /run/fastpath/fp[-INSTANCE]-agent.sock)")
    a.add_argument("--proxy-drain-timeout", type=float, default=None, metavar="SECONDS",
                   help="connections of a deleted or changed service run this long, then are "
                        "reset; their VIP stays until then (default 30)")
    a.add_argument("--dead-node-grace", type=float, default=None, metavar="SECONDS",
                   help="how long a node's agent may be dead before its pods leave the services "
                        "(default 300; its routes and BGP sessions stay regardless)")
    a.add_argument("--state-dir", default=None, metavar="DIR",
                   help="the node's state (default: FASTPATH_STATE_DIR, else /var/lib/fastpath; "
                        "an agent given none finds it from its node's running BIRD)")
    a.add_argument("--instance", default=None, metavar="TAG",
                   help="the instance scope of every name (default: FASTPATH_INSTANCE)")
    a.add_argument("-v", "--verbose", action="store_true",
                   help="log every CNI request (command, container, exit code, time) on stderr")
    a.set_defaults(func=_agent)


def _agent(args: argparse.Namespace) -> int:
    import os
    # before anything reads them: the state dir and instance decide every path and name
    if args.state_dir:
        os.environ["FASTPATH_STATE_DIR"] = args.state_dir
    if args.instance is not None:
        os.environ["FASTPATH_INSTANCE"] = args.instance
    if args.node is None and args.config is None:
        from fastpath.cni import agent, wire
        return agent.run(args.socket or wire.socket_path(), verbose=args.verbose)
    from fastpath.agent import config, daemon
    from fastpath.errors import ConfigError

    labels = None
    if args.label:
        try:
            labels = dict(kv.split("=", 1) for kv in args.label)
        except ValueError:
            raise ConfigError(f"labels must be KEY=VALUE: {args.label}") from None
    cfg = config.load(args.config, node=args.node, datastore=args.datastore, address=args.address,
                      asn=args.asn, router_id=args.router_id, pod_cidr=args.pod_cidr, pool=args.pool,
                      labels=labels, health=args.health, lease_ttl=args.lease_ttl,
                      bird=False if args.no_bird else None, socket=args.socket,
                      proxy=True if args.proxy else None, proxy_workers=args.proxy_workers,
                      dead_node_grace=args.dead_node_grace,
                      proxy_drain_timeout=args.proxy_drain_timeout)
    return daemon.run(cfg)


def agent_status(args: argparse.Namespace) -> int:
    """`fastpath status --node NAME`: the agent's own report (its state dir, or the demo
    node's); exit 1 when it is not running or not ready."""
    from fastpath.agent import daemon, demo
    from fastpath.errors import NotFound
    from fastpath.kernel import proc
    from fastpath.output import emit

    st = daemon.read_status(args.node) or demo.read_node_status(args.node)
    if st is None:
        raise NotFound(f"no agent of node {args.node} has run with this state dir",
                       hint="is FASTPATH_STATE_DIR the agent's?")
    st["running"] = proc.alive(int(st.get("pid") or 0))
    if not st["running"]:
        # readiness is what a live agent says now: a dead one's last report is history
        st["ready"] = False
        st["problems"] = [f"agent not running since its last report at "
                          f"{_clock(st.get('time'))}"] + [f"(last said) {p}" for p in st["problems"]]
    emit(args, st, _render_status)
    return 0 if st["running"] and st["ready"] else 1


def _clock(t: float | None) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"


def _render_status(st: dict):
    lines = [f"agent of node {st['node']}: pid {st['pid']} "
             f"({'running' if st['running'] else 'NOT running'}), datastore {st['datastore']} "
             f"at revision {st['revision']}",
             f"lease {st['lease']:x} (ttl {st['lease_ttl']}s), underlay {st['address']}, "
             f"pods {st['pod_cidr']}",
             "ready" if st["ready"] else "NOT ready: " + "; ".join(st["problems"])]
    for s in st.get("sessions", []):
        lines.append(f"  BGP {s['protocol']}: {s['state']} {s['info'] or ''} since {s['since']}")
    served = st.get("served", {})
    for name, s in st.get("services", {}).items():
        note = "" if served.get(name, "served") == "served" else f" ({served[name]})"
        lines.append(f"  service {name} {s['listen']} -> {', '.join(s['backends']) or 'no backends'}"
                     f"{note}")
    for vip, n in st.get("draining", {}).items():
        lines.append(f"  draining: {n} connections on {vip} (a deleted service's VIP stays until "
                     f"they end or the drain timeout resets them)")
    for d in st.get("dead_nodes", []):
        lines.append(f"  node {d['node']}: agent dead since {_clock(d['dead_since'])}"
                     + (" (gone: its pods left the services)" if d["gone"]
                        else f" (routes and sessions stay; its pods stay backends for "
                             f"{st.get('dead_node_grace', 0):g}s)"))
    return "\n".join(lines)
