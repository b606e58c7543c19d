"""`fastpath down`: stop this instance's proxies.

Found two ways, so that a crashed master's workers go too: the run directories of the
state dir (master pids), and /proc (processes running `fastpath proxy run`, or the demo's
pod backends, whose environment has this instance's FASTPATH_INSTANCE; forked workers
inherit it).
SIGTERM first (workers drain briefly), SIGKILL after 3 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

from fastpath import naming
from fastpath.kernel import proc
from fastpath.proxy.master import run_root


def _proxy_pids() -> list[int]:
    tag = naming.instance()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            proxy = b"proxy" in argv and b"run" in argv and any(b"fastpath" in a for a in argv)
            if not proxy and b"fastpath.proxy.demo_backend" not in argv:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if env.get(b"FASTPATH_INSTANCE", b"").decode() == tag or not tag:
            out.append(int(d))
    return out


def sweep() -> list[str]:
    removed: list[str] = []
    pids: set[int] = set()
    root = run_root()
    dirs = [p for p in root.glob(naming.name("proxy") + "-*") if p.is_dir()] if root.is_dir() else []
    for d in dirs:
        try:
            m = json.loads((d / "master.json").read_text())
            pids.add(int(m["pid"]))
        except (OSError, ValueError, KeyError):
            pass
    pids.update(_proxy_pids())
    pids = {p for p in pids if proc.alive(p)}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(proc.alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if proc.alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        removed.append(f"proxy process {pid}")
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"proxy run dir {d}")
    return removed
