"""`fastpath bench NAME`: runs one benchmark, prints medians, ratios and goals, writes JSON
(--json FILE) and a PNG (--plot FILE)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util

BENCHES = ("podnet", "cni", "bgp", "cluster", "accel", "proxy", "shm", "rcu", "soak")


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark against its peer, interleaved and pinned")
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in BENCHES:
        modname = f"fastpath.bench.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        bp = bsub.add_parser(name, help=mod.DESCRIPTION, description=mod.DESCRIPTION)
        bp.add_argument("--json", dest="json_file", metavar="FILE", help="write results as JSON")
        bp.add_argument("--plot", metavar="FILE", help="write a PNG plot")
        bp.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: per bench)")
        bp.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
        mod.add_arguments(bp)
        bp.set_defaults(func=_run, bench_module=modname)


def _run(args: argparse.Namespace) -> int:
    from fastpath.bench import harness
    from fastpath.bench.harness import default_plot
    from fastpath.output import console, print_json, table

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        # plots are the benches' only use of it: an optional extra, asked before the run
        from fastpath.errors import MissingDependency
        raise MissingDependency("--plot needs matplotlib", op="plot",
                                hint="pip install 'fastpath[bench]' (make bench does)")
    mod = importlib.import_module(args.bench_module)
    harness.start_progress(args.bench_module.rsplit(".", 1)[1])
    try:
        result = mod.run(args)
    finally:
        harness.stop_progress()
    if args.json_file:
        result.write_json(args.json_file)
    if args.plot:
        (getattr(mod, "plot", None) or default_plot)(result, args.plot)
    if getattr(args, "json", False):
        print_json(result.to_dict())
        return 0
    c = console()
    c.print(table(f"fastpath bench {result.name}", ["series", "unit", "n", "median", "p90", "p99"],
                  [(k, s.get("unit"), s.get("n"), _fmt(s.get("median")), _fmt(s.get("p90")),
                    _fmt(s.get("p99"))) for k, s in result.series.items()]))
    if result.ratios:
        c.print(table("ratios", ["ratio", "value"], [(k, _fmt(v)) for k, v in result.ratios.items()]))
    if result.goals:
        c.print(table("goals", ["goal", "value", "met"],
                      [(g["goal"], _fmt(g["value"]), "yes" if g["met"] else "NO") for g in result.goals]))
    for n in result.notes:
        c.print(f"note: {n}")
    return 0


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
