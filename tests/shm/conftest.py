"""Real processes for the shm tests: a short socket directory, forked peers that are always
reaped, and counts of this process's fds and mappings for leak checks."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import shutil
import signal
import tempfile

import pytest

_ctx = mp.get_context("fork")


@pytest.fixture
def sock_path():
    d = tempfile.mkdtemp(prefix="fp-shm-")  # AF_UNIX paths must stay under 108 bytes
    yield os.path.join(d, "s")
    shutil.rmtree(d, ignore_errors=True)


class Peers:
    def __init__(self) -> None:
        self.procs: list[mp.Process] = []

    def start(self, fn, *args) -> mp.Process:
        p = _ctx.Process(target=fn, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def reap(self) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)


@pytest.fixture
def peers():
    ps = Peers()
    yield ps
    ps.reap()


def fd_count() -> int:
    gc.collect()  # fds of earlier tests' garbage must not close between two counts
    return len(os.listdir("/proc/self/fd"))


def map_count() -> int:
    gc.collect()
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def memfd_maps() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "/memfd:" in line]


class Report:
    """A one-way pipe from a forked peer: put() is synchronous, so it survives os._exit."""

    def __init__(self) -> None:
        self._r, self._w = _ctx.Pipe(duplex=False)

    def put(self, obj) -> None:
        self._w.send(obj)

    def get(self, timeout: float = 10.0):
        if not self._r.poll(timeout):
            raise TimeoutError("the peer reported nothing")
        return self._r.recv()

    def close(self) -> None:
        self._r.close()
        self._w.close()


@pytest.fixture
def report():
    r = Report()
    yield r
    r.close()
