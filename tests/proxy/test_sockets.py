"""The proxy on real sockets (loopback): bytes, half-close, RST, backend failures,
timeouts, reload, drain, fd exhaustion, leaks. Each test runs its own proxy process."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from fastpath.kernel import proc
from tests.conftest import patience, require
from tests.proxy.conftest import connect, fd_count, recv_all


def cfg(listen, backends, extra="", glob=""):
    lines = ["global", "    pipe-idle 300ms", "    drain-timeout 5s", glob,
             "service t", f"    listen {listen[0]}:{listen[1]}"]
    lines += [f"    backend {h}:{p}" for h, p in backends]
    lines.append(extra)
    return "\n".join(lines) + "\n"


def roundtrip(addr, data: bytes) -> bytes:
    s = connect(addr, timeout=20)
    got = {}

    def reader():
        got["b"] = recv_all(s)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    t.join(30)
    s.close()
    return got["b"]


@pytest.mark.parametrize("mode", ["splice", "copy", "auto"])
def test_every_byte_once_in_order(mode, addr, backends, proxy):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr]), mode=mode)
    data = os.urandom(6 << 20)
    out = roundtrip((addr, 9000), data)
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    # small ones too, several at once
    results = []
    ts = [threading.Thread(target=lambda i=i: results.append(roundtrip((addr, 9000), bytes([i]) * 777)))
          for i in range(8)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    assert sorted(results) == sorted(bytes([i]) * 777 for i in range(8))
    time.sleep(0.1)
    st = p.status()["proxies"][0]
    c = st["counters"]
    if mode == "splice":
        assert c["bytes_spliced"] >= 2 * len(data) and c.get("bytes_copied", 0) == 0
    elif mode == "copy":
        assert c["bytes_copied"] >= 2 * len(data) and c.get("bytes_spliced", 0) == 0
        assert st["pipes"]["created"] == 0
    else:
        assert c["bytes_spliced"] > len(data) and c["bytes_copied"] > 0


def test_half_close_each_way(addr, backends, proxy):
    def late_reply(c):
        # reads the whole request (EOF), then answers: needs the client's FIN carried
        req = recv_all(c)
        c.sendall(b"got %d" % len(req))
    be = backends(addr, 9001, late_reply)
    proxy(cfg((addr, 9000), [be.addr]), mode="splice")
    s = connect((addr, 9000))
    s.sendall(b"x" * 100_000)
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s) == b"got 100000"
    s.close()

    def speaks_first_then_listens(c):
        c.sendall(b"hello")
        c.shutdown(socket.SHUT_WR)       # backend -> client direction ends first
        speaks_first_then_listens.got = recv_all(c)
    be2 = backends(addr, 9003, speaks_first_then_listens)
    proxy(cfg((addr, 9002), [be2.addr]))
    s = connect((addr, 9002))
    assert recv_all(s) == b"hello"       # EOF seen, yet the other way is still open
    s.sendall(b"still talking")
    s.shutdown(socket.SHUT_WR)
    time.sleep(0.3)
    assert speaks_first_then_listens.got == b"still talking"
    s.close()


def test_rst_is_carried_as_rst(addr, backends, proxy):
    seen = {}
    ev = threading.Event()

    def reader(c):
        try:
            while c.recv(65536):
                pass
            seen["r"] = "eof"
        except ConnectionResetError:
            seen["r"] = "rst"
        ev.set()
    be = backends(addr, 9001, reader)
    proxy(cfg((addr, 9000), [be.addr]))
    s = connect((addr, 9000))
    s.sendall(b"abc")
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert ev.wait(5) and seen["r"] == "rst"

    def resetter(c):
        c.recv(10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    be2 = backends(addr, 9003, resetter)
    p = proxy(cfg((addr, 9002), [be2.addr]))
    s = connect((addr, 9002))
    s.sendall(b"hi")
    with pytest.raises(ConnectionResetError):
        while s.recv(100):
            pass
    s.close()
    time.sleep(0.2)
    assert "reset the connection" in p.text()


def test_backend_refused_closes_client_cleanly_and_is_logged(addr, proxy):
    p = proxy(cfg((addr, 9000), [(addr, 9009)]))   # nothing listens on 9009
    s = connect((addr, 9000))
    s.sendall(b"anyone?")
    assert recv_all(s) == b""                        # FIN, not RST
    s.close()
    time.sleep(0.2)
    assert "connect: Connection refused" in p.text()


def test_backend_dies_mid_stream(addr, backends, proxy):
    def dies(c):
        c.recv(10)
        c.sendall(b"partial")
        c.close()               # the backend goes away in the middle of the exchange
    be = backends(addr, 9001, dies)
    p = proxy(cfg((addr, 9000), [be.addr]))
    s = connect((addr, 9000))
    s.sendall(b"req")
    got = b""
    try:
        got = recv_all(s)
    except ConnectionResetError:
        pass
    assert got == b"partial"
    s.close()
    # the proxy lives on and serves the next client
    be2_out = roundtrip((addr, 9000), b"q")
    assert be2_out == b"partial"
    assert p.proc.poll() is None


def test_connect_and_idle_timeouts(addr, backends, proxy):
    # a backend whose accept queue is full: SYNs are dropped, connect never completes
    stuck = socket.socket()
    stuck.bind((addr, 9001))
    stuck.listen(0)
    fill = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex((addr, 9001))
        fill.append(f)
    time.sleep(0.1)
    p = proxy(cfg((addr, 9000), [(addr, 9001)], "    connect-timeout 300ms"))
    t0 = time.monotonic()
    s = connect((addr, 9000))
    assert recv_all(s) == b""
    assert 0.2 < time.monotonic() - t0 < 3
    s.close()
    for f in fill:
        f.close()
    stuck.close()
    time.sleep(0.2)
    assert "connect timeout" in p.text()

    be = backends(addr, 9003)
    proxy(cfg((addr, 9002), [be.addr], "    idle-timeout 400ms"))
    s = connect((addr, 9002))
    s.sendall(b"ping")
    assert s.recv(10) == b"ping"
    t0 = time.monotonic()
    assert recv_all(s) == b""                   # closed by the proxy after 400 ms idle
    assert 0.3 < time.monotonic() - t0 < patience(3)
    s.close()


def test_reload_keeps_connections_and_refuses_bad_config(addr, backends, proxy):
    be1 = backends(addr, 9001, lambda c: (c.sendall(b"one:"), echo_rest(c)))
    be2 = backends(addr, 9002, lambda c: (c.sendall(b"two:"), echo_rest(c)))
    p = proxy(cfg((addr, 9000), [be1.addr]), workers=2)
    old = connect((addr, 9000))
    assert old.recv(4) == b"one:"
    gen0 = p.status()["proxies"][0]["generation"]

    p.cfg.write_text(cfg((addr, 9000), [be1.addr]) + "    bogus 1\n")
    r = p.fastpath("proxy", "reload", "--name", p.name, check=False)
    assert r.returncode == 2
    assert f"{p.cfg}:9: unknown directive 'bogus'" in r.stderr
    assert p.status()["proxies"][0]["generation"] == gen0
    s = connect((addr, 9000))
    assert s.recv(4) == b"one:"                  # still the running config
    s.close()

    # only the backends change: published to the running workers through the RCU table
    pids = sorted(p.worker_pids())
    p.cfg.write_text(cfg((addr, 9000), [be2.addr]))
    p.fastpath("proxy", "reload", "--name", p.name)
    deadline = time.monotonic() + patience(3)  # the workers see the new table
    got = b""
    while time.monotonic() < deadline and got != b"two:":
        s = connect((addr, 9000))
        got = s.recv(4)
        s.close()
    for _ in range(4):
        s = connect((addr, 9000))
        assert s.recv(4) == b"two:"
        s.close()
    st = p.status()["proxies"][0]
    assert st["generation"] == gen0 and st["last_reload"]["in_place"]
    assert sorted(p.worker_pids()) == pids
    assert "backends now" in p.text()
    # a change beyond backends: a new generation of workers, the old ones drain
    p.cfg.write_text(cfg((addr, 9000), [be1.addr], "    maxconn 500"))
    p.fastpath("proxy", "reload", "--name", p.name)
    deadline = time.monotonic() + patience(3, starts=2)  # a new generation of workers
    st = p.status()["proxies"][0]
    while st["generation"] != gen0 + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        st = p.status()["proxies"][0]
    assert st["generation"] == gen0 + 1
    assert not set(w["pid"] for w in st["workers"] if w["generation"] == gen0 + 1) & set(pids)
    s = connect((addr, 9000))
    assert s.recv(4) == b"one:"
    s.close()
    # the connection made before all three reloads still works, both ways
    old.sendall(b"x" * 200_000)
    old.shutdown(socket.SHUT_WR)
    assert recv_all(old) == b"x" * 200_000
    old.close()


def echo_rest(c):
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)


def test_sigterm_drains_established_connections(addr, backends, proxy):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr]))
    s = connect((addr, 9000))
    s.sendall(b"a")
    assert s.recv(1) == b"a"
    p.proc.send_signal(15)
    time.sleep(0.5)
    assert p.proc.poll() is None                  # draining: our connection lives
    with pytest.raises(OSError):
        connect((addr, 9000), timeout=1)          # but nobody listens any more
    s.sendall(b"b")
    assert s.recv(1) == b"b"
    s.close()
    assert p.proc.wait(5) == 0


def test_fd_limit_pauses_accepting_and_recovers(addr, backends, proxy):
    be = backends(addr, 9001)
    # 48 fds: the proxy serves a dozen connections, the rest wait in the accept queue
    p = proxy(cfg((addr, 9000), [be.addr]), nofile=48)
    clients = [connect((addr, 9000)) for _ in range(30)]
    for s in clients:
        s.sendall(b"p")
    time.sleep(0.3)
    served = sum(1 for s in clients if _answers(s))
    assert 3 <= served < 30
    got = {}
    late = threading.Thread(target=lambda: got.setdefault("b", roundtrip((addr, 9000), b"late")))
    late.start()
    time.sleep(0.3)
    assert p.proc.poll() is None and "b" not in got     # waiting, not refused
    for s in clients:
        s.close()
    late.join(10)
    assert got["b"] == b"late"                           # served once fds were free
    assert roundtrip((addr, 9000), b"z" * 100_000) == b"z" * 100_000
    time.sleep(0.1)
    assert p.status()["proxies"][0]["counters"].get("accept_paused", 0) >= 1
    assert "accepting paused" in p.text() and p.proc.poll() is None


def _answers(s) -> bool:
    s.settimeout(0.02)
    try:
        return s.recv(1) == b"p"
    except OSError:
        return False


def test_no_fd_or_pipe_leak_after_load(addr, backends, proxy):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr]), mode="splice")
    (wpid,) = p.worker_pids()
    base = fd_count(wpid)

    def client(i):
        for _ in range(10):
            assert roundtrip((addr, 9000), bytes([i]) * 50_000) == bytes([i]) * 50_000
    ts = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join(60) for t in ts]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and fd_count(wpid) != base:
        time.sleep(0.1)
    assert fd_count(wpid) == base                 # idle pipes trimmed after 300 ms
    time.sleep(0.1)
    pipes = p.status()["proxies"][0]["pipes"]
    assert pipes["in_use"] == 0 and pipes["free"] == 0
    assert pipes["created"] >= 1 and pipes["reused"] > pipes["created"]
    assert pipes["closed"] == pipes["created"]


def test_workers_share_the_port_and_health_checks_steer(addr, backends, proxy):
    be1 = backends(addr, 9001, lambda c: c.sendall(b"1"))
    dead = (addr, 9002)
    p = proxy(cfg((addr, 9000), [be1.addr, dead],
                  "    check interval 100ms timeout 100ms fall 1 rise 1"), workers=2)
    time.sleep(0.5)
    for _ in range(8):
        s = connect((addr, 9000))
        assert recv_all(s) == b"1"               # never sent to the dead one
        s.close()
    time.sleep(0.1)
    st = p.status()["proxies"][0]
    assert len(st["workers"]) == 2
    bs = {b["backend"]: b for b in st["services"][0]["backends"]}
    assert bs[f"{addr}:9002"]["up_in_workers"] == 0 and bs[f"{addr}:9001"]["up_in_workers"] == 2
    assert "is down" in p.text()


def test_check_command_and_bad_config_at_start(tmp_path, fastpath):
    bad = tmp_path / "bad.cfg"
    bad.write_text("service a\n    listen 127.0.0.1:1\n    balance random\n")
    r = fastpath("proxy", "run", "-c", str(bad), check=False)
    assert r.returncode == 2
    assert f"{bad}:3: balance: 'random' is not one of roundrobin, leastconn" in r.stderr
    r = fastpath("proxy", "check", "-c", str(bad), "--json", check=False)
    assert r.returncode == 2 and '"ConfigError"' in r.stdout


def test_workers_follow_a_killed_master(addr, backends, proxy):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr]), workers=2)
    pids = p.worker_pids()
    p.proc.kill()
    p.proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(proc.alive(w) for w in pids):
        time.sleep(0.05)
    assert not any(proc.alive(w) for w in pids)


@pytest.mark.root
def test_proxy_inside_a_netns(instance, tmp_path):
    """The proxy runs in a node's network namespace (`--netns`), its backend there too."""
    import subprocess
    import sys

    from fastpath import naming
    ns = naming.name("px")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs = []
    try:
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.77.0.1/32", "dev", "lo"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        echo_py = tmp_path / "echo.py"
        echo_py.write_text(
            "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "s.bind(('10.77.0.1',9001));s.listen(8)\n"
            "while True:\n  c,_=s.accept();c.sendall(b'from-netns');c.close()\n")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(echo_py)]))
        cfgf = tmp_path / "p.cfg"
        cfgf.write_text("service s\n    listen 10.77.0.1:9000\n    backend 10.77.0.1:9001\n")
        procs.append(subprocess.Popen([sys.executable, "-m", "fastpath", "proxy", "run", "-c",
                                       str(cfgf), "--netns", ns, "--workers", "1"]))
        probe = ("import socket,time\nfor i in range(100):\n  try:\n"
                 "    s=socket.create_connection(('10.77.0.1',9000),1);print(s.recv(20).decode());break\n"
                 "  except OSError: time.sleep(0.1)\n")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "from-netns"
        # the listener lives in the netns only
        ss = subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH", "sport = :9000"],
                            capture_output=True, text=True).stdout
        assert "10.77.0.1:9000" in ss
        bad = subprocess.run([sys.executable, "-m", "fastpath", "proxy", "run", "-c", str(cfgf),
                              "--netns", naming.name("nope")], capture_output=True, text=True)
        assert bad.returncode == 2 and "does not exist" in bad.stderr
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_maxconn_holds_new_connections_in_the_queue(addr, backends, proxy):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr], "    maxconn 2"))
    a, b = connect((addr, 9000)), connect((addr, 9000))
    for s in (a, b):
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    c = connect((addr, 9000))          # the kernel completes the handshake; we wait
    c.sendall(b"y")
    c.settimeout(0.4)
    with pytest.raises(socket.timeout):
        c.recv(1)
    a.close()
    c.settimeout(5)
    assert c.recv(1) == b"y"           # served as soon as a slot was free
    st = p.status()["proxies"][0]["services"][0]
    assert st["active"] == 2 and st["accepted"] == 3
    b.close()
    c.close()


def test_start_failures_are_one_line_and_leave_nothing(addr, tmp_path, fastpath):
    from fastpath.proxy.master import run_root
    blocker = socket.socket()
    blocker.bind((addr, 9000))
    blocker.listen(1)
    c = tmp_path / "p.cfg"
    c.write_text(cfg((addr, 9000), [(addr, 9001)]))
    r = fastpath("proxy", "run", "-c", str(c), check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == f"fastpath: listen on {addr}:9000: Address already in use [EADDRINUSE]"
    left = sorted(d.name for d in run_root().glob("fp-*")) if run_root().exists() else []
    assert left == []
    blocker.close()


def test_a_second_proxy_of_the_same_name_is_refused(addr, backends, proxy, fastpath, tmp_path):
    be = backends(addr, 9001)
    p = proxy(cfg((addr, 9000), [be.addr]))
    c = tmp_path / "other.cfg"
    c.write_text(cfg((addr, 9002), [be.addr]))
    r = fastpath("proxy", "run", "-c", str(c), "--name", p.name, check=False)
    assert r.returncode == 2 and "already running" in r.stderr
    assert p.status()["proxies"][0]["pid"] == p.proc.pid   # its files are untouched


def test_ipv6(proxy):
    import random

    from tests.proxy.conftest import Backend
    require(socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"), "no IPv6 on this machine")
    port = random.randrange(20000, 30000)
    be = Backend("::1", port + 1)
    try:
        proxy(f"service s\n    listen [::1]:{port}\n    backend [::1]:{port + 1}\n")
        s = socket.create_connection(("::1", port), timeout=5)
        s.sendall(b"v6" * 50_000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"v6" * 50_000
        s.close()
    finally:
        be.close()
