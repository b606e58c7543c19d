"""The `fastpath` command: parses arguments and dispatches to the packages.

Thin by design: each package registers its own subcommands from a `commands` module that
imports nothing heavy at module level (argparse and the standard library only); the
handler imports what it needs when it runs. This keeps `fastpath --help` and the CNI
client path fast. A FastpathError becomes one line on stderr and a non-zero exit here,
and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from fastpath import __version__
from fastpath.errors import FastpathError

# Each module has register(subparsers). A package that has no commands module yet is
# simply not listed by `fastpath --help` (find_spec does not run the module).
COMMAND_MODULES = (
    "fastpath.podnet.commands",
    "fastpath.trace.commands",
    "fastpath.bgp.commands",
    "fastpath.cni.commands",
    "fastpath.agent.commands",
    "fastpath.cluster.commands",
    "fastpath.sockredir.commands",
    "fastpath.proxy.commands",
    "fastpath.shm.commands",
    "fastpath.rcu.commands",
    "fastpath.doctor.commands",
    "fastpath.bench.commands",
)


def _available(modname: str) -> bool:
    try:
        return importlib.util.find_spec(modname) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpath",
        description="A node-local data plane: routing-mode pod networking, eBPF socket "
                    "redirect, a splice node proxy, shared memory and RCU.")
    parser.add_argument("--version", action="version", version=f"fastpath {__version__}")
    parser.add_argument("--json", action="store_true", default=False,
                        help="print results as JSON")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in COMMAND_MODULES:
        if _available(modname):
            importlib.import_module(modname).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = func(args)
    except FastpathError as e:
        if getattr(args, "json", False):
            from fastpath.output import print_json
            print_json(e.to_dict())
        print(f"fastpath: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("fastpath: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as cat and grep do; stdout goes to
        # /dev/null so that the interpreter's own flush at exit does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, what a shell reports for a writer killed by it
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
