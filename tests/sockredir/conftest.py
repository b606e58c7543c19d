"""Fixtures for sockredir: an enabled accel instance, a pod pair, and moving the test
process into the accel cgroup while it creates sockets (a socket belongs to the cgroup of
the task that created it, for its whole life)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket

import pytest

POD_CIDR = "10.244.79.0/24"


def own_cgroup() -> str:
    from fastpath.sockredir import cgroup as CG
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(CG.root(), line.strip()[3:].lstrip("/"))
    return CG.root()


@contextlib.contextmanager
def in_cgroup(path: str):
    """Run the body with this process in cgroup `path`, then move it back."""
    from fastpath.sockredir import cgroup as CG
    back = own_cgroup()
    CG.move(0, path)
    try:
        yield
    finally:
        CG.move(0, back)


@pytest.fixture
def pods():
    from fastpath.podnet.pair import PodPair
    with PodPair(prefix="p", cidr=POD_CIDR) as pp:
        yield pp


@pytest.fixture
def accel():
    """accel enabled on the default fp-<tag>-accel cgroup with POD_CIDR local; torn down."""
    from fastpath.sockredir import cgroup as CG
    from fastpath.sockredir import loader
    res = loader.enable(CG.default_path(), [ipaddress.ip_network(POD_CIDR)])
    try:
        yield res
    finally:
        if loader.is_enabled():
            loader.disable()
        CG.remove(CG.default_path())


def pair(family=socket.AF_INET, host="127.0.0.1", netns=None, server_addr=None,
         client_bind=None, client_netns=None):
    """A connected (client, server) pair; listener and client in the given netns."""
    from fastpath.kernel.netns import run_in as in_netns

    def mk_listener():
        return socket.create_server(server_addr or (host, 0), family=family)

    ls = in_netns(netns, mk_listener) if netns else mk_listener()

    def mk_client():
        c = socket.socket(family, socket.SOCK_STREAM)
        if client_bind:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.bind(client_bind)
        c.settimeout(10)
        c.connect(ls.getsockname()[:2])
        return c

    cn = client_netns or netns
    c = in_netns(cn, mk_client) if cn else mk_client()
    s, _ = ls.accept()
    ls.close()
    s.settimeout(10)
    return c, s


def recv_exact(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        b = sock.recv(min(1 << 20, n - len(buf)))
        if not b:
            break
        buf += b
    return bytes(buf)
