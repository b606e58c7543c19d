"""Commands on cluster objects, from any machine that reaches the datastore:

    fastpath node list
    fastpath service add NAME --listen IP:PORT (--backend IP:PORT ... | --pods PREFIX --port P)
    fastpath service del NAME | list
    fastpath peer add NAME --address IP --asn N [--node NODE] [--password-file F]
    fastpath peer del NAME | list
    fastpath pool add NAME --cidr CIDR [--block-size N] | list

Each takes --datastore URL (default FASTPATH_DATASTORE, else the state dir's cluster.db)
and --json. Standard library only at module level (the handlers import the rest).
"""

from __future__ import annotations

import argparse


def _common(p) -> None:
    from fastpath.output import add_json_flag
    p.add_argument("--datastore", metavar="URL", default=None,
                   help="sqlite:///PATH or etcd://HOST:PORT[,...]")
    add_json_flag(p)


def register(sub) -> None:
    s = sub.add_parser("service", help="services the node proxies serve (cluster datastore)")
    ssub = s.add_subparsers(dest="service_cmd", metavar="ACTION", required=True)
    p = ssub.add_parser("add", help="add a service: a listen VIP:PORT and its backends")
    p.add_argument("name")
    p.add_argument("--listen", required=True, metavar="IP:PORT")
    p.add_argument("--backend", action="append", default=[], metavar="IP:PORT",
                   help="a backend address (repeatable)")
    p.add_argument("--pods", metavar="PREFIX", default=None,
                   help="backends are the pods whose name starts with PREFIX, on every node")
    p.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE",
                   help="backends are the pods with these labels (repeatable)")
    p.add_argument("--port", type=int, default=None, help="the pods' port (with --pods/--selector)")
    p.add_argument("--replace", action="store_true", help="overwrite a service of that name")
    _common(p)
    p.set_defaults(func=cmd_service_add)
    p = ssub.add_parser("del", help="delete a service")
    p.add_argument("name")
    _common(p)
    p.set_defaults(func=cmd_service_del)
    p = ssub.add_parser("list", help="services and their backends as the nodes resolve them")
    _common(p)
    p.set_defaults(func=cmd_service_list)

    s = sub.add_parser("peer", help="external BGP peers (a top-of-rack router, a route server)")
    psub = s.add_subparsers(dest="peer_cmd", metavar="ACTION", required=True)
    p = psub.add_parser("add", help="add an external BGP peer, for every node or one")
    p.add_argument("name")
    p.add_argument("--address", required=True, metavar="IP")
    p.add_argument("--asn", required=True, type=int)
    p.add_argument("--node", default=None, help="only this node peers with it (default: every node)")
    p.add_argument("--password-file", default=None, metavar="FILE",
                   help="TCP MD5 password (RFC 2385), read from FILE")
    _common(p)
    p.set_defaults(func=cmd_peer_add)
    p = psub.add_parser("del", help="delete an external peer")
    p.add_argument("name")
    _common(p)
    p.set_defaults(func=cmd_peer_del)
    p = psub.add_parser("list", help="external BGP peers")
    _common(p)
    p.set_defaults(func=cmd_peer_list)

    s = sub.add_parser("pool", help="IP pools the nodes take their pod CIDR blocks from")
    psub = s.add_subparsers(dest="pool_cmd", metavar="ACTION", required=True)
    p = psub.add_parser("add", help="add an IP pool")
    p.add_argument("name")
    p.add_argument("--cidr", required=True)
    p.add_argument("--block-size", type=int, default=24, help="prefix length of a node's block (default 24)")
    _common(p)
    p.set_defaults(func=cmd_pool_add)
    p = psub.add_parser("list", help="IP pools and their blocks")
    _common(p)
    p.set_defaults(func=cmd_pool_list)


def add_node_list(nsub) -> None:
    """`fastpath node list`, registered under the demo's `node` command."""
    p = nsub.add_parser("list", help="the cluster's nodes: address, pod CIDR, ASN, liveness")
    _common(p)
    p.set_defaults(func=cmd_node_list)


def _store(args):
    from fastpath.cluster.store import ClusterStore
    return ClusterStore.open(args.datastore)


def cmd_node_list(args: argparse.Namespace) -> int:
    import time

    from fastpath.output import emit, table
    with _store(args) as cs:
        v = cs.view()
    rows = []
    for name, n in sorted(v.nodes.items()):
        a = v.alive.get(name)
        pods = sum(1 for (node, _) in v.pods if node == name)
        rows.append({"name": name, "address": n.address, "pod_cidr": n.pod_cidr, "asn": n.asn,
                     "router_id": n.rid, "labels": n.labels, "alive": a is not None,
                     "agent_pid": a.pid if a else None, "agent_host": a.host if a else None,
                     "lease": f"{a.lease:x}" if a else None,
                     "up_s": round(time.time() - a.started) if a else None, "pods": pods})
    emit(args, rows, lambda d: table("nodes", ["node", "address", "pod CIDR", "ASN", "alive", "agent",
                                               "pods"],
                                     [(r["name"], r["address"], r["pod_cidr"], r["asn"],
                                       "yes" if r["alive"] else "NO (lease expired)",
                                       f"pid {r['agent_pid']} on {r['agent_host']}" if r["alive"] else None,
                                       r["pods"]) for r in d]))
    return 0


def cmd_service_add(args: argparse.Namespace) -> int:
    import time

    from fastpath.cluster.objects import Service
    from fastpath.errors import ConfigError
    from fastpath.output import emit
    try:
        selector = dict(kv.split("=", 1) for kv in args.selector)
    except ValueError:
        raise ConfigError(f"selectors must be KEY=VALUE: {args.selector}") from None
    svc = Service(name=args.name, listen=args.listen, backends=tuple(args.backend), pods=args.pods,
                  port=args.port, selector=selector, stamp=time.time())
    with _store(args) as cs:
        cs.put_service(svc, replace=args.replace)
    emit(args, {"added": args.name, "listen": svc.listen},
         lambda d: f"service {svc.name} on {svc.listen}")
    return 0


def cmd_service_del(args: argparse.Namespace) -> int:
    from fastpath.errors import NotFound
    from fastpath.output import emit
    with _store(args) as cs:
        if not cs.del_service(args.name):
            raise NotFound(f"service {args.name} does not exist")
    emit(args, {"deleted": args.name}, lambda d: f"deleted service {args.name}")
    return 0


def cmd_service_list(args: argparse.Namespace) -> int:
    from fastpath.output import emit, table
    with _store(args) as cs:
        v = cs.view()
    rows = [{"name": s.name, "listen": s.listen,
             "by": "addresses" if s.backends else f"pods {s.pods or ''}{s.selector or ''}:{s.port}",
             "backends": v.backends(s)} for _, s in sorted(v.services.items())]
    emit(args, rows, lambda d: table("services", ["service", "listen", "backends given as", "backends now"],
                                     [(r["name"], r["listen"], r["by"], ", ".join(r["backends"]) or "none")
                                      for r in d]))
    return 0


def cmd_peer_add(args: argparse.Namespace) -> int:
    from fastpath.cluster.objects import Peer
    from fastpath.errors import ConfigError
    from fastpath.output import emit
    password = None
    if args.password_file:
        try:
            with open(args.password_file) as f:
                password = f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the password: {e.strerror}", where=args.password_file) from e
    peer = Peer(name=args.name, address=args.address, asn=args.asn, node=args.node, password=password)
    with _store(args) as cs:
        cs.put_peer(peer)
    emit(args, peer.public(), lambda d: f"peer {peer.name}: {peer.address} AS {peer.asn} "
                                        f"({'node ' + peer.node if peer.node else 'every node'})")
    return 0


def cmd_peer_del(args: argparse.Namespace) -> int:
    from fastpath.errors import NotFound
    from fastpath.output import emit
    with _store(args) as cs:
        if not cs.del_peer(args.name):
            raise NotFound(f"peer {args.name} does not exist")
    emit(args, {"deleted": args.name}, lambda d: f"deleted peer {args.name}")
    return 0


def cmd_peer_list(args: argparse.Namespace) -> int:
    from fastpath.output import emit, table
    with _store(args) as cs:
        v = cs.view()
    rows = [p.public() for _, p in sorted(v.peers.items())]
    emit(args, rows, lambda d: table("external BGP peers", ["peer", "address", "ASN", "nodes", "password"],
                                     [(r["name"], r["address"], r["asn"], r["node"] or "every node",
                                       r["password"] or "none") for r in d]))
    return 0


def cmd_pool_add(args: argparse.Namespace) -> int:
    from fastpath.cluster.objects import Pool
    from fastpath.output import emit
    pool = Pool(name=args.name, cidr=args.cidr, block_prefix=args.block_size)
    with _store(args) as cs:
        cs.put_pool(pool)
    emit(args, {"added": pool.name, "cidr": pool.cidr, "block_size": pool.block_prefix},
         lambda d: f"pool {pool.name}: {pool.cidr} in /{pool.block_prefix} blocks")
    return 0


def cmd_pool_list(args: argparse.Namespace) -> int:
    from fastpath.output import emit, table
    with _store(args) as cs:
        v = cs.view()
    rows = [{"name": p.name, "cidr": p.cidr, "block_size": p.block_prefix,
             "blocks": {b.cidr: b.node for b in v.blocks.values() if b.pool == p.name}}
            for _, p in sorted(v.pools.items())]
    emit(args, rows, lambda d: table("IP pools", ["pool", "CIDR", "block", "blocks held"],
                                     [(r["name"], r["cidr"], f"/{r['block_size']}",
                                       ", ".join(f"{c} ({n})" for c, n in sorted(r["blocks"].items()))
                                       or "none") for r in d]))
    return 0
