"""Running etcd members: the demo's 3-member cluster (in the underlay netns) and the
suite's. The process edge of the etcd backend; fastpath never needs etcd on a real node,
where the operator runs it.

Each member is `etcd` with its own data dir and name, a static initial cluster, and
short timers (heartbeat 50 ms, election 500 ms) so a lost member is replaced quickly.
Members run inside a netns when one is given (setns in the child before exec), and are
recorded by pid in `<dir>/<name>.pid` so `fastpath down` finds them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastpath.cluster.etcd_kv import EtcdKv
from fastpath.cluster.kv import DatastoreError
from fastpath.errors import FastpathError, MissingDependency
from fastpath.kernel import proc
from fastpath.kernel.libc import setns_raw

START_TIMEOUT = 20.0


def etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)
    if not path:
        raise MissingDependency("etcd is not installed", op="find etcd",
                                hint="apt-get install etcd-server, or use --datastore sqlite")
    return path


@dataclass
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    pid: int = 0

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


@dataclass
class EtcdCluster:
    directory: Path
    members: list[Member]
    netns: str | None = None
    token: str = "fastpath"
    log_files: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"{m.host}:{m.client_port}" for m in self.members)

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def start(self, only: list[str] | None = None, wait: bool = True) -> None:
        binary = etcd_binary()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            if only is not None and m.name not in only:
                continue
            data = self.directory / f"{m.name}.data"
            argv = [binary, "--name", m.name, "--data-dir", str(data),
                    "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                    "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                    "--initial-cluster", initial, "--initial-cluster-token", self.token,
                    "--initial-cluster-state", "new", "--heartbeat-interval", "50",
                    "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr",
                    "--auto-compaction-retention", "0"]
            log = open(self.directory / f"{m.name}.log", "ab")
            fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC) if self.netns else -1
            try:
                p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                                     preexec_fn=(lambda fd=fd: _enter(fd)) if fd >= 0 else None,
                                     pass_fds=(fd,) if fd >= 0 else ())
            finally:
                if fd >= 0:
                    os.close(fd)
                log.close()
            m.pid = p.pid
            (self.directory / f"{m.name}.pid").write_text(f"{p.pid}\n")
        if wait:
            self.wait_healthy([m.name for m in self.members if only is None or m.name in only])

    def wait_healthy(self, names: list[str], timeout: float = START_TIMEOUT) -> None:
        """Until each named member answers /health with quorum (netns: through `probe`)."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for n in sorted(pending):
                if self.healthy(n):
                    pending.discard(n)
            time.sleep(0.1)
        if pending:
            tails = "; ".join(f"{n}: {_tail(self.directory / f'{n}.log')}" for n in sorted(pending))
            raise FastpathError(f"etcd members {sorted(pending)} did not become healthy within "
                                f"{timeout:.0f}s ({tails})", op="start etcd")

    def healthy(self, name: str) -> bool:
        """The member answers a linearizable read (so it has quorum)."""
        m = self.member(name)
        kv = EtcdKv(f"etcd://{m.host}:{m.client_port}", timeout=1.0, netns=self.netns)
        try:
            kv.revision()
            return _running(m.pid)
        except DatastoreError:
            return False
        finally:
            kv.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        m = self.member(name)
        if m.pid and _running(m.pid):
            os.kill(m.pid, sig)
            _wait_gone(m.pid)

    def restart(self, name: str) -> None:
        """Start a killed member again on its existing data dir (it rejoins)."""
        self.start(only=[name], wait=False)

    def stop(self) -> None:
        for m in self.members:
            if m.pid and _running(m.pid):
                os.kill(m.pid, signal.SIGTERM)
        for m in self.members:
            if m.pid and not _wait_gone(m.pid, 5.0):
                os.kill(m.pid, signal.SIGKILL)
                _wait_gone(m.pid)
            (self.directory / f"{m.name}.pid").unlink(missing_ok=True)


def _enter(fd: int) -> None:
    e = setns_raw(fd)
    if e:
        os.write(2, f"setns: {os.strerror(e)}\n".encode())
        os._exit(126)


def _running(pid: int) -> bool:
    return proc.alive(pid)


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        if not _running(pid):
            return True
        time.sleep(0.02)
    return False


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"


def kill_recorded(directory: Path) -> list[int]:
    """SIGKILL every member recorded in `directory` that still runs (fastpath down)."""
    out = []
    for f in directory.glob("*.pid"):
        try:
            pid = int(f.read_text().strip())
        except ValueError:
            continue
        if _running(pid) and b"etcd" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)
            out.append(pid)
        f.unlink(missing_ok=True)
    return out
