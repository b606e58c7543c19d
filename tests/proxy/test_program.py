"""A programmed proxy (`proxy run --program`, what a node agent starts) fed through the
RCU table hand-over, in a netns of its own: a table it cannot apply yet (its VIP is not on
the loopback) is tried again until it applies, not dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from fastpath import naming
from fastpath.agent import proxy as nodeproxy
from fastpath.kernel import netns
from fastpath.proxy.master import run_dir
from fastpath.rcu.table import SharedTable
from tests.conftest import patience

pytestmark = pytest.mark.root


def _last_reload(name: str) -> dict:
    try:
        return json.loads((run_dir(name) / "master.json").read_text()).get("last_reload") or {}
    except (OSError, ValueError):
        return {}


def test_a_refused_table_is_tried_again_until_it_applies(instance):
    ns = naming.name("prog")
    netns.create(ns)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    p = subprocess.Popen([sys.executable, "-m", "fastpath", "proxy", "run", "--program", "--name", "pp",
                          "--workers", "1", "--netns", ns], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    table = SharedTable.create(1 << 16, readers=4, versions=4, name="test-program")
    try:
        deadline = time.monotonic() + patience(15, starts=2)
        while not nodeproxy.program_socket("pp").exists() and time.monotonic() < deadline:
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            time.sleep(0.05)
        svc = {"s": {"listen": "10.96.9.1:80", "backends": ["10.96.9.2:8080"]}}
        table.publish({b"services": json.dumps(svc).encode()})
        nodeproxy.hand_over("pp", table)
        deadline = time.monotonic() + patience(5)
        while _last_reload("pp").get("ok") is not False and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = _last_reload("pp")
        assert refused.get("ok") is False and "10.96.9.1" in refused.get("error", ""), refused
        # the address arrives later (as an agent that adds its VIPs late would): applied
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.96.9.1/32", "dev", "lo"], check=True)
        deadline = time.monotonic() + patience(5)
        while not _last_reload("pp").get("ok") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _last_reload("pp").get("ok"), _last_reload("pp")
    finally:
        p.terminate()
        p.wait(timeout=patience(15))
        table.close()
        netns.delete(ns)
