"""Printing results: a rich table for people, JSON (`--json`) for programs.

Commands build plain data (dicts, lists) and hand it to `emit`; they never print JSON
and tables by two code paths of their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def add_json_flag(parser) -> None:
    """`--json` on a subcommand; the top-level `fastpath --json CMD` works too."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the result as JSON")


def wants_json(args) -> bool:
    return bool(getattr(args, "json", False))


def print_json(data: Any, file=None) -> None:
    json.dump(data, file or sys.stdout, indent=2, sort_keys=False, default=str)
    (file or sys.stdout).write("\n")


PIPE_WIDTH = 100_000   # columns when the output is not a terminal: no cell is ever cut


def console(stderr: bool = False):
    """A console for people. On a terminal, its width; in a pipe or a log, where rich would
    assume 80 columns and cut cells to `10.255.0.1…`, wide enough that every cell stays
    whole (tables are only as wide as their content)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=True, width=None if tty else PIPE_WIDTH)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]):
    """A rich Table with `columns` and `rows` (cells turned to str; None shows as '-')."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    return t


def emit(args, data: Any, render: Callable[[Any], Any] | None = None) -> None:
    """Print `data` as JSON when asked, else `render(data)` (a rich renderable, a str, or
    None when render printed by itself)."""
    if wants_json(args) or render is None:
        print_json(data)
        return
    out = render(data)
    if out is not None:
        console().print(out)
