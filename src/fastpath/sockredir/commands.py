"""`fastpath accel`: socket-level redirect with eBPF (sockops + sk_msg on a SOCKHASH).

    fastpath accel enable [--cgroup PATH] [--local CIDR ...]
    fastpath accel disable
    fastpath accel status [--sockets]
    fastpath accel local [--add CIDR] [--remove CIDR]
    fastpath accel tune [--max-queued N] [--bulk-bytes N] [--apply-bytes N] [--cork-bytes N]
    fastpath accel run -- CMD [ARGS...]
    fastpath accel torture [--seconds N]
"""

from __future__ import annotations

import argparse

from fastpath.output import add_json_flag


def register(sub) -> None:
    p = sub.add_parser("accel", help="socket-level redirect for same-node TCP (eBPF sockmap)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = p.add_subparsers(dest="accel_cmd", metavar="CMD", required=True)

    e = asub.add_parser("enable", help="load, pin and attach the programs to a cgroup")
    e.add_argument("--cgroup", metavar="PATH",
                   help="cgroup v2 to attach to (absolute or relative to the cgroup2 root); "
                        "default: fp-[tag-]accel, created by fastpath")
    e.add_argument("--local", metavar="CIDR", action="append", default=[],
                   help="a prefix whose peers are on this node (pod CIDR); repeatable. "
                        "The node's own addresses and loopback are always local")
    e.add_argument("--skip-selftest", action="store_true",
                   help="attach without first running the redirect self-test in a private "
                        "netns (experts: an unverified kernel may stall or corrupt streams)")
    _tuning_flags(e)
    add_json_flag(e)
    e.set_defaults(func=_enable)

    tu = asub.add_parser("tune", help="change how sk_msg redirects (see `accel tune -h`)")
    _tuning_flags(tu)
    add_json_flag(tu)
    tu.set_defaults(func=_tune)

    d = asub.add_parser("disable", help="detach and unpin (redirected connections keep working)")
    add_json_flag(d)
    d.set_defaults(func=_disable)

    s = asub.add_parser("status", help="where it is attached, sockets in the map, counters")
    s.add_argument("--sockets", action="store_true", help="list the sockets in the map")
    add_json_flag(s)
    s.set_defaults(func=_status)

    lo = asub.add_parser("local", help="show or change the prefixes counted as on this node")
    lo.add_argument("--add", metavar="CIDR", action="append", default=[])
    lo.add_argument("--remove", metavar="CIDR", action="append", default=[])
    add_json_flag(lo)
    lo.set_defaults(func=_local)

    r = asub.add_parser("run", help="run a command in the accelerated cgroup")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD")
    r.set_defaults(func=_run)

    t = asub.add_parser("torture", help="many concurrent streams, hash-checked, with accel "
                                        "toggled mid-stream and abrupt closes")
    t.add_argument("--seconds", type=float, default=60.0)
    t.add_argument("--connections", type=int, default=24, help="concurrent streams per wave")
    t.add_argument("--max-size", type=int, default=4 << 20, help="largest message (bytes)")
    t.add_argument("--seed", type=int, default=None)
    add_json_flag(t)
    t.set_defaults(func=_torture)


def _tuning_flags(p) -> None:
    p.add_argument("--max-queued", type=int, default=None, metavar="N",
                   help="when the peer holds N unread redirected bytes, the sender moves to "
                        "the TCP stack, whose window bounds memory (default 16 MiB); 0: no limit")
    p.add_argument("--bulk-bytes", type=int, default=None, metavar="N",
                   help="a socket sending one message of >= N bytes leaves the redirect for "
                        "good (bulk flows are faster through TCP); 0: never")
    p.add_argument("--apply-bytes", type=int, default=None, metavar="N",
                   help="run the verdict once per N bytes (bpf_msg_apply_bytes); 0: per message")
    p.add_argument("--cork-bytes", type=int, default=None, metavar="N",
                   help="hold messages until N bytes (bpf_msg_cork_bytes); stalls "
                        "request/response traffic, for experiments only; 0: off")


def _config(args) -> dict:
    return {k: getattr(args, k) for k in ("bulk_bytes", "apply_bytes", "cork_bytes", "max_queued")
            if getattr(args, k) is not None}


def _tune(args) -> int:
    from fastpath.output import emit
    from fastpath.sockredir import keys, loader

    keys.pack_config(**{**dict.fromkeys(keys.CONFIG_FIELDS, 0), **_config(args)})  # validate
    cfg = loader.tune(**_config(args))
    emit(args, cfg, lambda c: ", ".join(f"{k}={v}" for k, v in c.items()))
    return 0


def _enable(args) -> int:
    from fastpath.errors import AlreadyExists
    from fastpath.output import emit
    from fastpath.sockredir import cgroup, keys, loader, preflight

    nets = [keys.parse_cidr(c) for c in args.local]  # validate before touching anything
    keys.pack_config(**{**dict.fromkeys(keys.CONFIG_FIELDS, 0), **_config(args)})
    target = cgroup.resolve(args.cgroup)
    if loader.is_enabled():  # before the self-test: it would be wasted
        raise AlreadyExists(f"accel is already enabled (pins in {loader.pin_dir()})",
                            hint="fastpath accel disable first")
    pre = preflight.run(skip_selftest=args.skip_selftest)
    res = loader.enable(target, nets, _config(args), bound=pre.bound,
                        selftest=pre.selftest.to_dict() if pre.selftest else None)
    res["notes"] = pre.notes
    emit(args, res, lambda r: "\n".join(
        [f"accel enabled: sockops on {r['cgroup']}"
         f"{' (created)' if r['created_cgroup'] else ' (already there)' if r.get('owned_cgroup') else ''}"
         f", pins in "
         f"{r['pins']}, local: {', '.join(r['local']) or '-'}; peer queue bound: "
         f"{r['peer_queue']['mode']}"
         f"{'; ' + pre.selftest.line() if pre.selftest else ''}",
         *[f"note: {n}" for n in r["notes"]]]))
    return 0


def _disable(args) -> int:
    from fastpath.output import emit
    from fastpath.sockredir import loader

    res = loader.disable()

    def render(r):
        line = f"accel disabled: detached from {', '.join(r['detached']) or 'nothing'}, " \
               f"{len(r['unpinned'])} pins removed"
        if r["removed_cgroup"]:
            line += f", removed {r['removed_cgroup']}"
        if r["processes_left_in_cgroup"]:
            line += f"; cgroup kept: {len(r['processes_left_in_cgroup'])} processes still in it"
        if r["sockets_still_redirected"]:
            line += f"; {r['sockets_still_redirected']} sockets keep redirecting until they close"
        return line
    emit(args, res, render)
    return 0


def _status(args) -> int:
    from fastpath.output import emit, table
    from fastpath.sockredir import loader

    st = loader.status()
    if not args.sockets:
        st.pop("socket_keys", None)

    def render(s):
        if not s["enabled"]:
            return "accel: not enabled"
        from rich.console import Group
        c = s["counters"]
        rows = [("cgroup", s["cgroup"]), ("attached", "yes" if s["attached"] else "NO"),
                ("pins", s["pins"]), ("processes in cgroup", s["processes_in_cgroup"]),
                ("sockets in map", s["sockets"]), ("local", ", ".join(s["local"]) or "-"),
                ("messages redirected", c["redirected_msgs"]),
                ("bytes redirected", c["redirected_bytes"]),
                ("messages via stack (misses)", c["passed_msgs"]),
                ("bytes via stack", c["passed_bytes"]),
                ("sockets added", c["sockets_added"]),
                ("sockets skipped (remote peer)", c["sockets_remote"]),
                ("sockets kept on the stack", c["pinned_to_stack"]),
                ("bulk sockets moved to the stack", c["bulk_to_stack"]),
                ("sockets moved to the stack (peer backlog)", c["backlog_to_stack"]),
                ("tuning", ", ".join(f"{k}={v}" for k, v in s["config"].items())),
                ("map insert failures", c["sockets_failed"])]
        pq = s.get("peer_queue")
        if pq:
            rows.append(("peer queue bound", f"{pq['mode']} ({pq['obj']}.bpf.o)"
                         + (f": {pq['degraded']}" if pq["degraded"] else "")))
        st_ = s.get("selftest")
        rows.append(("redirect self-test", "skipped at enable" if st_ is None and pq else
                     ("passed" if st_ and st_["ok"] else "-")
                     + (f"; fallbacks: {'; '.join(st_['fallbacks'])}"
                        if st_ and st_["fallbacks"] else "")))
        parts = [table("accel", ["", "value"], rows)]
        if s.get("socket_keys") is not None:
            parts.append(table("sockets", ["local -> remote"], [(k,) for k in s["socket_keys"]]))
        return Group(*parts)
    emit(args, st, render)
    return 0


def _local(args) -> int:
    from fastpath.output import emit
    from fastpath.sockredir import keys, loader

    add = [keys.parse_cidr(c) for c in args.add]
    rm = [keys.parse_cidr(c) for c in args.remove]
    nets, absent = loader.change_local(add, rm)

    def render(d):
        lines = [f"{n} was not in the local set: nothing removed" for n in d["not_there"]]
        return "\n".join(lines + (d["local"] or ["(none)"]))
    emit(args, {"local": nets, "not_there": absent}, render)
    return 1 if absent else 0


def _run(args) -> int:
    import os

    from fastpath.errors import NotFound, UsageError
    from fastpath.sockredir import cgroup, loader

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise UsageError("nothing to run", hint="fastpath accel run -- CMD [ARGS]")
    if not loader.is_enabled():
        raise NotFound("accel is not enabled in this instance", hint="fastpath accel enable")
    att = loader.attachment()
    # a process with a state dir of its own (a demo node's agent) finds no record of where
    # accel is attached: the instance's default cgroup is where `up --accel` put it
    path = att["cgroup"] if att else cgroup.default_path()
    if not os.path.isdir(path):
        raise NotFound(f"accel is enabled but its cgroup {path} is gone", hint="fastpath accel enable")
    cgroup.move(0, path)
    try:
        os.execvp(cmd[0], cmd)
    except FileNotFoundError as e:
        raise NotFound(f"{cmd[0]}: command not found") from e
    return 127


def _torture(args) -> int:
    from fastpath.output import emit
    from fastpath.sockredir import streams, torture

    rep = torture.run(seconds=args.seconds, connections=args.connections,
                      max_size=args.max_size, seed=args.seed)
    emit(args, rep.to_dict(), streams.render)
    return 0 if rep.ok else 1
