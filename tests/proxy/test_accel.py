"""The proxy with and without `fastpath accel` (sk_msg redirect on a SOCKHASH), with the
proxy and its peers in this test's own fp-<tag>-accel cgroup. splice(2) cannot read
redirected bytes; the proxy must deliver every byte anyway: through sockredir's explicit
check (accel-check on) or its run-time detection alone (accel-check off)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_fastpath
from tests.proxy.conftest import loop_addr

pytestmark = pytest.mark.root

ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
def h(c):
    while True:
        b = c.recv(65536)
        if not b: break
        c.sendall(b)
    c.shutdown(socket.SHUT_WR); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
"""

# interactive exchanges (splice sees EAGAIN while bytes wait in the psock queue), then a
# bulk send closed by a FIN right behind the redirected bytes
CLIENT = """
import socket, sys, os, hashlib, threading, json
addr = (sys.argv[1], int(sys.argv[2]))
s = socket.create_connection(addr, timeout=10)
ok = True
for i in range(10):
    d = os.urandom(40000); s.sendall(d); got = b""
    while len(got) < len(d):
        b = s.recv(65536)
        if not b: break
        got += b
    ok &= got == d
s.close()
data = os.urandom(2_000_000)
s = socket.create_connection(addr, timeout=10)
out = bytearray()
def rd():
    while True:
        b = s.recv(65536)
        if not b: break
        out.extend(b)
t = threading.Thread(target=rd); t.start()
s.sendall(data); s.shutdown(socket.SHUT_WR); t.join(30)
bulk = hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
print(json.dumps({"interactive": ok, "bulk": bulk, "got": len(out)}))
"""


def _accel_run(accel: bool, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "fastpath", "accel", "run", "--", *argv] if accel else argv


@pytest.mark.parametrize("accel,check", [(False, "on"), (True, "on"), (True, "off")])
def test_every_byte_with_and_without_accel(accel, check, tmp_path: Path):
    addr = loop_addr()
    (tmp_path / "echo.py").write_text(ECHO)
    (tmp_path / "client.py").write_text(CLIENT)
    cfg = tmp_path / "p.cfg"
    cfg.write_text(f"global\n    workers 1\n    accel-check {check}\n"
                   f"service s\n    listen {addr}:9000\n    backend {addr}:9001\n")
    procs: list[subprocess.Popen] = []
    if accel:
        run_fastpath("accel", "enable")
    try:
        procs.append(subprocess.Popen(_accel_run(accel, [sys.executable, str(tmp_path / "echo.py"),
                                                         addr, "9001"])))
        log = open(tmp_path / "proxy.log", "w")
        procs.append(subprocess.Popen(_accel_run(accel, [
            sys.executable, "-m", "fastpath", "proxy", "run", "-c", str(cfg), "--mode", "splice"]),
            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = run_fastpath("proxy", "status", "--json", check=False)
            if st.returncode == 0 and json.loads(st.stdout)["proxies"] and \
                    json.loads(st.stdout)["proxies"][0]["workers"]:
                break
            time.sleep(0.1)
        out = subprocess.run(_accel_run(accel, [sys.executable, str(tmp_path / "client.py"),
                                                addr, "9000"]),
                             capture_output=True, text=True, timeout=60)
        res = json.loads(out.stdout)
        assert res == {"interactive": True, "bulk": True, "got": 2_000_000}, out.stderr
        time.sleep(0.1)
        p = json.loads(run_fastpath("proxy", "status", "--json").stdout)["proxies"][0]
        c = p["counters"]
        if not accel:
            assert c["bytes_spliced"] >= 2 * 2_400_000 and c.get("bytes_copied", 0) == 0
        else:
            red = json.loads(run_fastpath("accel", "status", "--json").stdout)["counters"]
            assert red["redirected_bytes"] >= 2_400_000     # the redirect really happened
            assert c.get("bytes_spliced", 0) == 0            # nothing was stranded in a pipe
            if check == "on":
                assert c["accel_sockets"] >= 4               # both proxy sockets, 2 connections
            else:
                assert c["fallback_redirected"] >= 2         # found at run time
    finally:
        for pr in reversed(procs):
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(15)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
        if accel:
            run_fastpath("accel", "disable")
