"""`fastpath rcu torture` and `fastpath rcu stats`."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("rcu", help="RCU: torture test, grace-period statistics")
    rsub = p.add_subparsers(dest="rcu_command", metavar="SUBCOMMAND", required=True)
    from fastpath.output import add_json_flag

    t = rsub.add_parser("torture", help="readers verify every entry while a writer churns and "
                        "readers are killed (rcutorture)")
    t.add_argument("--seconds", type=float, default=30.0, help="how long (default 30)")
    t.add_argument("--readers", type=int, default=3, help="reader processes (default 3)")
    t.add_argument("--threads", type=int, default=2, help="reader threads per process (default 2)")
    t.add_argument("--keys", type=int, default=512, help="key space (default 512)")
    t.add_argument("--kill-every", type=float, default=0.5,
                   help="mean seconds between reader kills, 0: never (default 0.5)")
    t.add_argument("--domain-threads", type=int, default=2,
                   help="threads torturing the in-process domain, 0: none (default 2)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--name", default="torture", help="table name shown by `rcu stats`")
    add_json_flag(t)
    t.set_defaults(func=_torture)

    s = rsub.add_parser("stats", help="grace periods, latency, pending reclamations and "
                        "callbacks, readers of this instance's shared tables and registered domains")
    s.add_argument("name", nargs="?", help="one table or domain (default: all)")
    add_json_flag(s)
    s.set_defaults(func=_stats)


def _check_positive(what: str, v: float, zero_ok: bool = False) -> None:
    from fastpath.errors import UsageError
    if v < 0 or (v == 0 and not zero_ok):
        raise UsageError(f"{what} must be {'>= 0' if zero_ok else '> 0'}, got {v}")


def _torture(args: argparse.Namespace) -> int:
    from fastpath.output import console, emit, table, wants_json
    from fastpath.rcu import torture

    _check_positive("--seconds", args.seconds)
    _check_positive("--readers", args.readers)
    _check_positive("--threads", args.threads)
    _check_positive("--keys", args.keys)
    _check_positive("--kill-every", args.kill_every, zero_ok=True)
    _check_positive("--domain-threads", args.domain_threads, zero_ok=True)
    from fastpath.errors import UsageError
    if args.readers > 64 or args.threads > 16 or args.domain_threads > 16:
        raise UsageError("at most 64 reader processes, 16 threads each, 16 domain threads")
    progress = None
    if not wants_json(args) and sys.stderr.isatty():
        c = console(stderr=True)
        progress = lambda p: c.print(f"  {p['elapsed']:>6}s  reads {p['reads']:,}  bad "  # noqa: E731
                                     f"{p['bad_reads']}  writer ops {p['writer_ops']:,}  "
                                     f"killed {p['killed']}")
    res = torture.run(args.seconds, readers=args.readers, threads=args.threads, nkeys=args.keys,
                      kill_every=args.kill_every if args.kill_every > 0 else float("inf"),
                      seed=args.seed, name=args.name, domain_threads=args.domain_threads,
                      on_progress=progress)

    def render(r):
        rows = [(k, v) for k, v in r.items() if k not in ("errors", "ok", "domain")]
        rows += [(f"domain {k}", v) for k, v in r.get("domain", {}).items()]
        rows.append(("result", "PASS: zero bad reads" if r["ok"] else "FAIL"))
        t = table("fastpath rcu torture", ["", "value"],
                  [(k, f"{v:.3f}" if isinstance(v, float) else v) for k, v in rows])
        console().print(t)
        for e in r["errors"]:
            console().print(f"error: {e}")
    emit(args, res, render)
    return 0 if res["ok"] else 1


def _stats(args: argparse.Namespace) -> int:
    from fastpath.errors import NotFound
    from fastpath.output import console, emit, table
    from fastpath.rcu import registry, stats

    notes = registry.tables()
    if args.name:
        notes = [n for n in notes if n["name"] == args.name]
        if not notes:
            raise NotFound(f"no live SharedTable or RCU domain named {args.name!r} in this instance",
                           hint="`fastpath rcu stats` lists them")
    data = {"tables": [stats.read(n) for n in notes if n.get("kind", "table") == "table"],
            "domains": [stats.read(n) for n in notes if n.get("kind") == "domain"]}

    def render(d):
        if not d["tables"] and not d["domains"]:
            return ("no SharedTable or registered RCU domain is live in this instance "
                    "(a writer registers one while it runs)")
        c = console()
        if d["domains"]:
            c.print(table("RCU domains (in-process)", ["domain", "pid", "grace periods",
                                                       "gp mean ms", "gp max ms", "pending cbs",
                                                       "cbs run", "readers"],
                          [(x["name"], x["pid"], x["grace_periods"], f"{x['gp_mean_ms']:.3f}",
                            f"{x['gp_max_ms']:.3f}", x["pending_callbacks"], x["callbacks_run"],
                            x["readers"]) for x in d["domains"]]))
        for t in d["tables"]:
            c.print(table(f"SharedTable {t['name']} (writer pid {t['writer_pid']})", ["", "value"], [
                ("entries", t["entries"]), ("publishes", t["publishes"]),
                ("grace periods", t["grace_periods"]),
                ("grace period mean / max", f"{t['gp_mean_ms']:.3f} / {t['gp_max_ms']:.3f} ms"),
                ("synchronize() calls", t["synchronize_calls"]),
                ("pending (versions waiting for a grace period)", f"{t['pending']} of {t['versions']}"),
                ("readers online / registered", f"{t['readers_online']} / {len(t['readers'])}"
                 f" (of {t['reader_slots']} slots)"),
                ("stalls reported", t["stalls"]), ("dead readers freed", t["dead_readers"]),
                ("version size", f"{t['version_size']} bytes"),
            ]))
        rows = [(t["name"], r["slot"], r["pid"], r["tid"], "online" if r["online"] else "offline",
                 r["qs_token"], "yes" if r["alive"] else "DEAD")
                for t in d["tables"] for r in t["readers"]]
        if rows:
            c.print(table("readers", ["table", "slot", "pid", "tid", "state", "qs token", "alive"], rows))
        return None
    emit(args, data, render)
    return 0
