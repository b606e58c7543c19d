"""Real-socket peers for the proxy's integration tests: backends in threads, the proxy as
a subprocess (`python -m fastpath proxy run`), all on loopback addresses 127.x.y.z chosen
at random so that parallel runs do not collide on ports."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import patience


def loop_addr() -> str:
    r = random.Random()
    return f"127.{r.randrange(1, 255)}.{r.randrange(0, 255)}.{r.randrange(1, 255)}"


class Backend:
    """A TCP server in a thread; `handler(conn)` runs per connection in its own thread."""

    def __init__(self, host: str, port: int, handler=None, backlog: int = 128) -> None:
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(self.addr)
        self.sock.listen(backlog)
        self.handler = handler or echo
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c) -> None:
        try:
            self.handler(c)
        except OSError as e:
            self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def echo(c: socket.socket) -> None:
    """Echo until EOF, then half-close: the reply stream ends after the request stream."""
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.shutdown(socket.SHUT_WR)


class Proxy:
    def __init__(self, tmp: Path, text: str, workers: int = 1, mode: str | None = None,
                 nofile: int | None = None, name: str = "p0",
                 env: dict | None = None) -> None:
        self.name = name
        self.env = env
        self.cfg = tmp / f"{name}.cfg"
        self.cfg.write_text(text)
        self.log = tmp / f"{name}.log"
        argv = [sys.executable, "-m", "fastpath", "proxy", "run", "-c", str(self.cfg),
                "--workers", str(workers), "--log-level", "debug", "--name", name]
        if mode:
            argv += ["--mode", mode]
        pre = None
        if nofile:
            import resource
            pre = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))  # noqa: E731
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=pre, env=env)
        self.workers = workers

    def wait_ready(self, timeout: float = 10.0) -> dict:
        # the master and each worker start, and every status poll is a process start too
        deadline = time.monotonic() + patience(timeout, starts=self.workers + 3)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"proxy exited: {self.log.read_text()}"
            st = self.status(check=False)
            if st and st["proxies"] and len(st["proxies"][0]["workers"]) >= self.workers:
                return st["proxies"][0]
            time.sleep(0.05)
        raise AssertionError(f"proxy not ready: {self.log.read_text()}")

    def status(self, check: bool = True) -> dict | None:
        import json
        p = subprocess.run([sys.executable, "-m", "fastpath", "proxy", "status", "--json",
                            "--name", self.name],
                           capture_output=True, text=True, timeout=20, env=self.env)
        if p.returncode != 0:
            if check:
                raise AssertionError(p.stderr)
            return None
        return json.loads(p.stdout)

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.status()["proxies"][0]["workers"]]

    def fastpath(self, *argv, check=True):
        p = subprocess.run([sys.executable, "-m", "fastpath", *argv], capture_output=True,
                           text=True, timeout=30)
        if check and p.returncode:
            raise AssertionError(f"{argv}: {p.returncode} {p.stdout} {p.stderr}")
        return p

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def addr():
    return loop_addr()


@pytest.fixture
def backends():
    made: list[Backend] = []

    def make(host, port, handler=None, backlog=128):
        b = Backend(host, port, handler, backlog)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


@pytest.fixture
def proxy(tmp_path):
    made: list[Proxy] = []

    def make(text, **kw):
        p = Proxy(tmp_path, text, name=f"p{len(made)}", **kw)
        made.append(p)
        p.wait_ready()
        return p
    yield make
    for p in made:
        p.stop()


def connect(addr, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(addr, timeout=timeout)
    return s


def recv_all(s: socket.socket, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    while len(out) < limit:
        b = s.recv(1 << 16)
        if not b:
            break
        out += b
    return bytes(out)


def fd_count(pid: int) -> int:
    """Sockets and pipes the process holds (what a connection or a pipe leak would grow;
    map fds the sockredir query keeps open for its lookups are not counted)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(("socket:", "pipe:"))
    return n
