"""How connections through the proxy end, on real loopback sockets: a worker or master
that dies, or a drain that runs out, ends every connection it carried with a reset at both
ends (never a FIN a client would take for a complete stream); a backend that refuses is
retried on another before the client sees anything."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from fastpath.kernel import proc
from tests.conftest import patience
from tests.proxy.conftest import connect, recv_all


def cfg(listen, backends, extra="", glob="", drain="5s"):
    lines = ["global", "    pipe-idle 300ms", f"    drain-timeout {drain}", glob,
             "service t", f"    listen {listen[0]}:{listen[1]}"]
    lines += [f"    backend {h}:{p}" for h, p in backends]
    lines.append(extra)
    return "\n".join(lines) + "\n"

CHUNK = b"x" * 65536


def streamer(ends: dict):
    """A backend that streams until it fails, and records how its side ended."""
    def handler(c: socket.socket) -> None:
        c.recv(10)
        try:
            for _ in range(100_000):       # bounded: ~6.5 GB at most, the test cuts it short
                c.sendall(CHUNK)
                time.sleep(0.002)
            ends["backend"] = "finished"
        except ConnectionResetError:
            ends["backend"] = "reset"
        except BrokenPipeError:
            ends["backend"] = "broken pipe after a reset"
    return handler


def read_until_end(s: socket.socket, ends: dict, got: list) -> None:
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                ends["client"] = "FIN"
                return
            got[0] += len(b)
    except ConnectionResetError:
        ends["client"] = "reset"
    except TimeoutError:
        ends["client"] = "hung"


def _stream(addr, backends, proxy, port: int, glob: str = "", drain: str = "5s"):
    ends: dict = {}
    be = backends(addr, port + 1, streamer(ends))
    p = proxy(cfg((addr, port), [be.addr], glob=glob, drain=drain))
    p.wait_ready()
    s = connect((addr, port), timeout=patience(20))
    s.sendall(b"go")
    got = [0]
    t = threading.Thread(target=read_until_end, args=(s, ends, got))
    t.start()
    deadline = time.monotonic() + patience(10)
    while got[0] < 4 << 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got[0] >= 4 << 20, "the stream did not start"
    return p, s, t, ends, got


def _wait(ends: dict, keys, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(k in ends for k in keys):
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["copy", "splice"])
def test_a_killed_worker_resets_both_ends(addr, backends, proxy, mode):
    p, s, t, ends, got = _stream(addr, backends, proxy, 9100, glob=f"    mode {mode}")
    (worker,) = p.worker_pids()
    os.kill(worker, signal.SIGKILL)
    t.join(patience(10))
    _wait(ends, ("client", "backend"), patience(10))
    s.close()
    assert ends.get("client") == "reset", f"the client saw {ends.get('client')} after {got[0]} bytes"
    assert ends.get("backend", "").startswith(("reset", "broken pipe")), ends


def test_a_killed_master_resets_at_the_drain_deadline(addr, backends, proxy):
    # the workers follow their master (PDEATHSIG): they drain, and at the deadline what is
    # still open is cut short, so it is reset, never closed as if it had ended
    p, s, t, ends, got = _stream(addr, backends, proxy, 9110, drain="1s")
    workers = p.worker_pids()
    p.proc.kill()
    p.proc.wait()
    t.join(patience(15))
    _wait(ends, ("client", "backend"), patience(10))
    s.close()
    assert ends.get("client") == "reset", f"the client saw {ends.get('client')} after {got[0]} bytes"
    assert ends.get("backend", "").startswith(("reset", "broken pipe")), ends
    assert not any(proc.alive(w) for w in workers)


def test_sigterm_drain_that_runs_out_resets(addr, backends, proxy):
    p, s, t, ends, got = _stream(addr, backends, proxy, 9120, drain="1s")
    p.proc.send_signal(signal.SIGTERM)
    t.join(patience(15))
    _wait(ends, ("client", "backend"), patience(10))
    s.close()
    assert ends.get("client") == "reset" and ends.get("backend", "").startswith(("reset", "broken"))
    assert p.proc.wait(patience(10)) == 0
    assert "drain timeout: resetting 1 connections" in p.text()


def test_a_complete_stream_still_ends_with_a_fin(addr, backends, proxy):
    def short(c):
        c.recv(10)
        c.sendall(b"y" * (3 << 20))
        c.shutdown(socket.SHUT_WR)
        while c.recv(100):
            pass
    be = backends(addr, 9131, short)
    p = proxy(cfg((addr, 9130), [be.addr]))
    p.wait_ready()
    for _ in range(3):
        s = connect((addr, 9130), timeout=patience(10))
        s.sendall(b"go")
        assert recv_all(s) == b"y" * (3 << 20)   # every byte, then a FIN (no reset)
        s.close()


def test_a_refused_backend_is_retried_before_the_client_sees_anything(addr, backends, proxy):
    good = backends(addr, 9141)
    dead = (addr, 9149)   # nothing listens there
    # checks too seldom to find the dead backend first (one failed check of fall 2 leaves
    # it up): the first request goes there, and the refused connect marks it down at once
    extra = "    check interval 60s timeout 500ms fall 2 rise 1\n    retries 3"
    p = proxy(cfg((addr, 9140), [dead, good.addr], extra))
    p.wait_ready()
    for i in range(6):   # the first request after the death too: every one answered
        s = connect((addr, 9140), timeout=patience(10))
        s.sendall(f"req {i}".encode())
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == f"req {i}".encode(), f"request {i} was not answered"
        s.close()
    st = p.status()["proxies"][0]
    backends_ = {b["backend"]: b for svc in st["services"] for b in svc["backends"]}
    assert backends_[f"{addr}:9149"]["up_in_workers"] == 0, "the refusing backend was not marked down"
    assert st["counters"].get("retries", 0) >= 1
    assert "backend " + f"{addr}:9149 down (connect: Connection refused)" in p.text()


def test_retries_run_out_and_the_client_is_closed(addr, proxy):
    p = proxy(cfg((addr, 9150), [(addr, 9158), (addr, 9159)], "    retries 1"))
    p.wait_ready()
    s = connect((addr, 9150), timeout=patience(10))
    s.sendall(b"anyone?")
    assert recv_all(s) == b""     # both refused: nothing to give, the client is closed
    s.close()
    time.sleep(0.2)
    assert p.text().count("connect: Connection refused") >= 2
