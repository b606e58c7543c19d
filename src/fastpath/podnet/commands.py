"""`fastpath up | down | status | check | exec | pod ... | node ...` (argparse only here;
handlers import the rest when they run)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("up", help="build the demo cluster: an underlay, N nodes, M pods per node")
    p.add_argument("--nodes", type=int, default=2, help="node namespaces (default 2)")
    p.add_argument("--pods", type=int, default=2, help="pods per node (default 2)")
    p.add_argument("--routing", default=None, metavar="BACKEND",
                   help="cross-node routing: agent (a node agent per node runs BIRD from the "
                        "datastore; the default), bgp (BIRD driven centrally by up) or static")
    p.add_argument("--datastore", default=None, metavar="sqlite|etcd|URL",
                   help="agent: where the node agents meet: sqlite (the state dir's, the default), "
                        "etcd (a 3-member cluster started in the underlay netns), or a URL")
    p.add_argument("--tor", action="store_true",
                   help="agent: a top-of-rack router (FRR) in the underlay peers with every node "
                        "over eBGP, and the nodes reach each other's pods through it")
    p.add_argument("--route-reflector", metavar="NODE", default=None,
                   help="bgp: NODE reflects routes, the others peer only with it (default: full mesh)")
    p.add_argument("--bgp-hold", metavar="SECONDS", type=int, default=None,
                   help="bgp: hold time, 0 or >= 3 (default 3; keepalive is a third of it)")
    p.add_argument("--underlay", default=None, help="underlay CIDR (default 10.255.0.0/24)")
    p.add_argument("--pod-supernet", default=None, help="pod CIDRs come from here, a /24 per node "
                   "(default 10.244.0.0/16)")
    p.add_argument("--proxy", action="store_true",
                   help="also a node proxy per node on a service VIP (fastpath proxy demo)")
    p.add_argument("--accel", action="store_true",
                   help="also enable socket redirect (fastpath accel) for the pods' TCP; "
                        "`fastpath exec` then runs commands in the accel cgroup")
    p.add_argument("--skip-selftest", action="store_true",
                   help="with --accel: skip the redirect self-test (see `accel enable -h`)")
    add_json_flag(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="remove everything fastpath made in this instance scope")
    add_json_flag(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="the demo cluster: nodes, pods, routes, FORWARD; with --node, "
                                      "that node's agent: lease, readiness, BGP sessions, services")
    p.add_argument("--node", default=None, help="a node whose agent runs here (a real node, or a "
                                                "demo node)")
    add_json_flag(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="every pod reaches every other pod by ICMP and TCP")
    p.add_argument("--timeout", type=float, default=1.0, help="per probe, seconds (default 1)")
    add_json_flag(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("exec", help="run a command inside a pod's network namespace")
    p.add_argument("pod")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_exec)

    pod = sub.add_parser("pod", help="add, delete, list pods")
    psub = pod.add_subparsers(dest="pod_cmd", metavar="ACTION", required=True)
    p = psub.add_parser("add", help="add a pod on NODE")
    p.add_argument("node")
    p.add_argument("name", nargs="?")
    add_json_flag(p)
    p.set_defaults(func=cmd_pod_add)
    p = psub.add_parser("del", help="delete a pod")
    p.add_argument("name")
    add_json_flag(p)
    p.set_defaults(func=cmd_pod_del)
    p = psub.add_parser("list", help="list pods (name, node, ip)")
    add_json_flag(p)
    p.set_defaults(func=cmd_pod_list)

    node = sub.add_parser("node", help="add, delete nodes")
    nsub = node.add_subparsers(dest="node_cmd", metavar="ACTION", required=True)
    p = nsub.add_parser("add", help="add a node to the cluster")
    p.add_argument("name", nargs="?")
    p.add_argument("--pod-cidr", default=None, help="its pod CIDR (default: the next free /24)")
    add_json_flag(p)
    p.set_defaults(func=cmd_node_add)
    p = nsub.add_parser("del", help="delete a node and its pods")
    p.add_argument("name")
    add_json_flag(p)
    p.set_defaults(func=cmd_node_del)
    from fastpath.cluster.commands import add_node_list
    add_node_list(nsub)


def _tables(c, routes: dict | None = None, health: dict | None = None):
    from rich.console import Group

    from fastpath.output import table
    parts = [table(f"nodes (underlay {c.underlay} on bridge in {c.underlay_netns}, routing {c.routing})",
                   ["node", "netns", "underlay ip", "pod CIDR", "router id", "pods"],
                   [(n.name, n.netns, n.underlay_ip, n.pod_cidr, n.router_id, len(c.pods_on(n.name)))
                    for n in c.nodes]),
             table("pods", ["pod", "node", "ip", "netns", "host veth"],
                   [(p.name, p.node, p.ip, p.netns, p.host_ifname) for p in c.pods])]
    if routes is not None:
        rows = []
        for n in c.nodes:
            for p in c.pods_on(n.name):
                rows.append((n.name, f"{p.ip}/32", f"dev {p.host_ifname}", "pod"))
            st = routes.get(n.name, {})
            for r in st.get("expected", []):
                dst, via = r.split(" via ")
                missing = " MISSING" if r in st.get("missing", []) else ""
                rows.append((n.name, dst, f"via {via}", c.routing + missing))
        parts.append(table("routes", ["node", "destination", "next hop", "kind"], rows))
        sessions = [(n.name, s["peer"], s["state"], _uptime(s.get("uptime_s")), s.get("imported"),
                     s.get("exported"), s.get("last_error") or "")
                    for n in c.nodes for s in routes.get(n.name, {}).get("sessions", [])]
        if sessions:
            parts.append(table("BGP sessions", ["node", "peer", "state", "uptime", "received",
                                                "exported", "last error"], sessions))
    if health is not None:
        parts += ([f"[red]PROBLEM[/] {x}" for x in health["problems"]]
                  or ["[green]healthy: every node, pod, route, agent and BGP session is as "
                      "planned[/]"])
    return Group(*parts)


def _uptime(s: float | None) -> str | None:
    if s is None:
        return None
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cluster_data(c, routes: dict | None, health: dict | None = None) -> dict:
    d = c.to_dict()
    if routes is not None:
        d["routes"] = routes
    if health is not None:
        d["health"] = health
    return d


def cmd_up(args) -> int:
    from fastpath.errors import FastpathError
    from fastpath.output import console, emit
    from fastpath.podnet import plan, routing
    from fastpath.podnet.build import Builder
    pre = None
    if getattr(args, "accel", False):
        # Ask the kernel before building: a kernel that cannot redirect refuses `up --accel`
        # with nothing made. Not when accel is on already (its kernel passed then).
        from fastpath.sockredir import loader, preflight
        if not loader.is_enabled():
            pre = preflight.run(skip_selftest=getattr(args, "skip_selftest", False))
    with Builder() as b:
        c, made = b.up(nodes=args.nodes, pods=args.pods, routing_name=args.routing,
                       underlay=args.underlay or plan.DEFAULT_UNDERLAY,
                       pod_supernet=args.pod_supernet or plan.DEFAULT_POD_SUPERNET,
                       routing_options={"route_reflector": args.route_reflector,
                                        "bgp_hold": args.bgp_hold, "datastore": args.datastore,
                                        "tor": args.tor or None,
                                        "proxy": True if args.proxy and args.routing in (None, "agent")
                                        else None})
    accel: dict | None = None
    if getattr(args, "accel", False):
        from fastpath.sockredir.cluster import enable_for
        try:
            accel = enable_for(c, pre)
        except FastpathError as e:
            # The cluster is whole and stays; accel is off, and the output says why.
            accel = {"enabled": False, "error": str(e)}
    if not made:
        msg = (f"a cluster exists already in scope {c.scope}* ({len(c.nodes)} nodes, {len(c.pods)} pods, "
               f"{c.phase}): nothing changed; `fastpath down` removes it")
        failed = accel is not None and accel.get("enabled") is False
        if accel is not None and failed:
            msg = msg.replace("nothing changed", f"accel is OFF ({accel['error']}), "
                                                  "nothing else changed")
        elif accel is not None:
            msg = msg.replace("nothing changed", "accel enabled, nothing else changed")
        if getattr(args, "json", False):
            emit(args, {"created": False, "message": msg, **c.to_dict(),
                        **({"accel": accel} if accel else {})})
        else:
            console(stderr=True).print(f"fastpath: {msg}")
        return 1 if failed else 0
    routes = routing.get(c.routing).status(c)
    data = {"created": True, **_cluster_data(c, routes), **({"accel": accel} if accel else {})}
    accel_off = accel is not None and accel.get("enabled") is False
    if getattr(args, "proxy", False):
        if c.routing == "agent":   # each node's agent programs its proxy from the datastore
            from fastpath.agent import demo as agent_demo
            data["proxy"] = agent_demo.proxy_up()
        else:
            from fastpath.proxy import demo
            data["proxy"] = demo.up()

    def render(d):
        from rich.console import Group
        parts = [_tables(c, routes)]
        if accel_off:
            parts.append(f"[red]accel is OFF[/] (the cluster is up without socket redirect): "
                         f"{accel['error']}")
        elif accel is not None:
            parts.append(f"accel: sockops on {accel['cgroup']}, local {', '.join(accel['local'])}")
            parts += [f"accel note: {n}" for n in accel.get("notes", [])]
        if "proxy" in d:
            from fastpath.proxy.commands import render_demo
            parts.append(render_demo(d["proxy"]))
        return Group(*parts)
    emit(args, data, render)
    return 0 if data.get("proxy", {}).get("ok", True) and not accel_off else 1


def cmd_down(args) -> int:
    from fastpath.cleanup import sweep_all
    from fastpath.output import emit
    rep = sweep_all()

    def render(d):
        lines = [f"removed {x}" for x in d["removed"]] or ["nothing to remove"]
        lines += [f"FAILED {x}" for x in d["failed"]]
        return "\n".join(lines)
    emit(args, rep.to_dict(), render)
    return 1 if rep.failed else 0


def cmd_status(args) -> int:
    from fastpath.podnet import cluster
    if args.node is None and cluster.load() is None:
        # a real node: no demo cluster here, but the node's own agent
        from fastpath.agent import daemon
        args.node = daemon.only_local_node()
    if args.node is not None:
        from fastpath.agent.commands import agent_status
        return agent_status(args)
    from fastpath.output import emit
    from fastpath.podnet import health, routing
    c = cluster.require()
    backend = routing.get(c.routing)
    routes = backend.status(c)
    h = health.inspect_cluster(c)
    datastore = backend.datastore_health() if hasattr(backend, "datastore_health") else None
    h.update(health.verdict(h, routes, datastore))
    if datastore is not None:
        h["datastore"] = datastore
    emit(args, _cluster_data(c, routes, h), lambda d: _tables(c, routes, h))
    return 0 if h["ok"] else 1


def cmd_pod_add(args) -> int:
    from fastpath.output import emit
    from fastpath.podnet.build import Builder
    with Builder() as b:
        p = b.add_pod(args.node, args.name)
    emit(args, p.to_dict(), lambda d: f"pod {p.name} on {p.node}: {p.ip} (netns {p.netns})")
    return 0


def cmd_pod_del(args) -> int:
    from fastpath.output import emit
    from fastpath.podnet.build import Builder
    with Builder() as b:
        p = b.del_pod(args.name)
    emit(args, {"deleted": p.name, "node": p.node, "ip": p.ip}, lambda d: f"pod {p.name} deleted")
    return 0


def cmd_pod_list(args) -> int:
    from fastpath.output import emit, table
    from fastpath.podnet import cluster
    c = cluster.require()
    rows = [{"name": p.name, "node": p.node, "ip": p.ip, "netns": p.netns, "phase": p.phase}
            for p in c.pods]
    emit(args, rows, lambda d: table("pods", ["pod", "node", "ip", "netns"],
                                     [(r["name"], r["node"], r["ip"], r["netns"]) for r in d]))
    return 0


def cmd_node_add(args) -> int:
    from fastpath.output import emit
    from fastpath.podnet.build import Builder
    with Builder() as b:
        n = b.add_node(args.name, args.pod_cidr)
    emit(args, n.to_dict(), lambda d: f"node {n.name}: {n.underlay_ip}, pods {n.pod_cidr}")
    return 0


def cmd_node_del(args) -> int:
    from fastpath.output import emit
    from fastpath.podnet.build import Builder
    with Builder() as b:
        removed = b.del_node(args.name)
    emit(args, {"removed": removed}, lambda d: "\n".join(f"removed {x}" for x in removed))
    return 0


def cmd_exec(args) -> int:
    import os

    from fastpath.errors import UsageError
    from fastpath.kernel.netns import Netns, setns
    from fastpath.podnet import cluster
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("fastpath exec POD -- CMD: no command given")
    pod = cluster.require().pod(args.pod)
    with Netns.open(pod.netns) as n:
        setns(n.fd, f"enter netns {pod.netns}")
    from fastpath.sockredir.cluster import join_if_enabled
    join_if_enabled()  # pod processes are accelerated when accel is on
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        import errno

        from fastpath.errors import CommandNotRunnable
        raise CommandNotRunnable(e.strerror or str(e), op=f"exec {argv[0]} in pod {pod.name}",
                                 errno=e.errno, not_found=e.errno == errno.ENOENT) from e
    return 127


def cmd_check(args) -> int:
    from fastpath.output import emit
    from fastpath.podnet import check, cluster
    c = cluster.require()
    result = check.run(c, timeout=args.timeout)
    emit(args, result, lambda d: check.render(d))
    return 0 if result["ok"] else 1
