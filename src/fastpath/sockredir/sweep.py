"""`fastpath down` for sockredir: detach this instance's sockops from its cgroups, unpin
everything under its pin dir, remove the fp-[tag-]accel cgroup (moving any process left
in it to the parent). Found by name and by the pins, not only through state; idempotent."""

from __future__ import annotations

import os

from fastpath.sockredir import cgroup as CG
from fastpath.sockredir import libbpf as B
from fastpath.sockredir import loader, selfrun


def sweep() -> list[str]:

    removed: list[str] = []
    d = loader.pin_dir()
    try:
        att = loader.attachment()
    except Exception:
        att = None
    targets = []
    try:
        targets.append(CG.default_path())
    except Exception:
        pass
    if att and att["cgroup"] not in targets:
        targets.append(att["cgroup"])
    ops = loader.pin_path(loader.PROG_SOCKOPS)
    if os.path.exists(ops):
        with B.obj_get(ops) as fd:
            for cg in targets:
                if loader.detach_from(cg, fd.fileno()):
                    removed.append(f"sockops attachment on {cg}")
    elif CG.default_path() and os.path.isdir(CG.default_path()):
        # pins lost (crash): the cgroup is ours, so whatever sockops sits on it is too
        for pid in loader.attached_ids(CG.default_path()):
            with B.prog_get_by_id(pid) as fd:
                if loader.detach_from(CG.default_path(), fd.fileno()):
                    removed.append(f"sockops prog {pid} on {CG.default_path()}")
    removed += [f"pin {p}" for p in loader.unlink_pins(d)]
    if os.path.isdir(d) and loader.remove_pin_dir(d):
        removed.append(f"pin dir {d}")
    removed += CG.remove(CG.default_path())
    if att and att["created_cgroup"] and att["cgroup"] != CG.default_path():
        removed += CG.remove(att["cgroup"])
    loader.forget()
    removed += selfrun.sweep_leftovers()
    return removed
