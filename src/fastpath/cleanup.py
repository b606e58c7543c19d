"""`fastpath down`'s sweep: every package that leaves something on the machine (processes,
BPF pins, cgroups, netns, iptables chains) removes it in its own `sweep` module.

Order matters: processes that hold namespaces or sockets go first (BIRD, proxies, agents),
then BPF attachments and cgroups, then namespaces and links. Each sweep finds its objects
by the instance's `fp-` scope (fastpath.naming), not only through state, so that it also
works after a crash or a half-finished `up`; each is idempotent, and one failing sweep
does not stop the others.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

# module with `sweep() -> list[str]` (what it removed), in the order they run
SWEEP_MODULES = (
    "fastpath.proxy.sweep",
    "fastpath.cni.sweep",
    "fastpath.bgp.sweep",
    "fastpath.agent.sweep",
    "fastpath.sockredir.sweep",
    "fastpath.podnet.sweep",
)


@dataclass
class SweepReport:
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"removed": self.removed, "failed": self.failed}


def _available(modname: str) -> bool:
    # find_spec("a.b") raises ModuleNotFoundError when package "a" itself is missing
    try:
        return importlib.util.find_spec(modname) is not None
    except ModuleNotFoundError:
        return False


def sweep_all() -> SweepReport:
    report = SweepReport()
    for modname in SWEEP_MODULES:
        if not _available(modname):
            continue
        try:
            report.removed += importlib.import_module(modname).sweep()
        except Exception as e:  # keep sweeping: a half-broken machine is when down matters most
            report.failed.append(f"{modname}: {e}")
    return report
