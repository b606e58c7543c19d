"""The import graph is the architecture (docs/ARCHITECTURE.md, "The seams"): module-level
imports only, no cycles, and an arrow between two packages only where the design says.
`make lint` runs this next to ruff (whose PLC0415 keeps imports at module level)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The shared ground every package may use.
GROUND = {"errors", "naming", "state", "output", "features", "faults", "kernel", "_atomic",
          "__version__", "fastpath"}  # "fastpath": the package itself (its __init__)
# Commands on top: they may import any package; no package imports them.
TOP = {"cli", "__main__", "doctor", "bench", "cleanup"}
# Arrows between mechanisms, each with its reason.
ALLOWED = {
    ("cni", "podnet"),        # the CNI plugin wires pods through podnet.attach and its IPAM
    ("bgp", "podnet"),        # BIRD is a podnet routing backend (podnet.routing's seam)
    ("trace", "podnet"),      # trace names pods and nodes of the cluster it walks
    ("proxy", "rcu"),         # workers read the service table through a SharedTable
    ("proxy", "shm"),         # ... which lives in a sealed memfd region
    ("proxy", "sockredir"),   # the proxy copies on sockets accel redirects
    ("proxy", "podnet"),      # the demo's proxies and backends run in the cluster's pods
    ("rcu", "shm"),           # SharedTable is a memfd region
    ("sockredir", "podnet"),  # up --accel takes the cluster's prefixes; torture builds pods
    # the node agent owns its node: it drives each mechanism from the cluster datastore
    ("agent", "cluster"), ("agent", "bgp"), ("agent", "cni"), ("agent", "podnet"),
    ("agent", "rcu"), ("agent", "sockredir"), ("agent", "proxy"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "fastpath").rglob("*.py"):
        mod = ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[mod] = f
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """fastpath modules imported at module level (from X import y: X.y when it is a module)."""
    got = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastpath"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                got.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            got |= {a.name for a in node.names if a.name.startswith("fastpath")}
    return got & known


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(p, set(mods)) for m, p in mods.items()}
    # a package's __init__ is imported by its submodules' imports: ignore those edges
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t.count(".") == 1)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_arrows_between_packages_are_the_designed_ones():
    mods = _modules()
    wrong = []
    for m, path in mods.items():
        src = _package(m)
        for t in _imports(path, set(mods)):
            dst = _package(t)
            if dst == src or dst in GROUND or src in TOP:
                continue
            if dst in TOP:
                wrong.append(f"{m} imports {t}: nothing below the commands imports them")
            elif (src, dst) not in ALLOWED:
                wrong.append(f"{m} imports {t}: {src} -> {dst} is not a designed arrow")
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_the_tree():
    """Guard against a check that passes because it read nothing."""
    mods = _modules()
    assert len(mods) > 100 and "fastpath.kernel.netns" in mods
    assert "fastpath.rcu.shm" not in mods
    assert _imports(mods["fastpath.rcu.table"], set(mods)) >= {"fastpath.shm.memfd"}
