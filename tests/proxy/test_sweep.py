"""`fastpath down`'s proxy sweep: finds this instance's proxies (run dir and /proc), stops
master and workers, removes the run dir; leaves other instances' proxies alone."""

import os
import time

from fastpath.kernel import proc
from fastpath.proxy import sweep
from fastpath.proxy.master import run_root
from tests.conftest import patience
from tests.proxy.conftest import Proxy, loop_addr


def test_sweep_stops_this_instances_proxies_only(tmp_path):
    addr = loop_addr()
    mine = Proxy(tmp_path, f"service s\n    listen {addr}:9000\n    backend {addr}:9001\n",
                 workers=2, name="mine")
    other_env = dict(os.environ, FASTPATH_INSTANCE="zz" + os.urandom(2).hex(),
                     FASTPATH_STATE_DIR=str(tmp_path / "other-state"))
    addr2 = loop_addr()
    other = Proxy(tmp_path, f"service s\n    listen {addr2}:9000\n    backend {addr2}:9001\n",
                  name="other", env=other_env)
    try:
        st = mine.wait_ready()
        other.wait_ready()
        pids = [mine.proc.pid] + [w["pid"] for w in st["workers"]]
        removed = sweep.sweep()
        assert sum("proxy process" in r for r in removed) >= 1
        for pid in pids:
            deadline = time.monotonic() + patience(5)  # SIGTERM, then the drain
            while proc.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not proc.alive(pid), pid
        assert other.proc.poll() is None            # another instance's: untouched
        assert not list(run_root().glob("fp-*"))
        assert sweep.sweep() == []                   # idempotent
    finally:
        mine.stop()
        other.stop()
