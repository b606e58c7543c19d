"""etcd for the cluster tests: real members on loopback, each on ports the kernel picked."""

from __future__ import annotations

import shutil
import socket

import pytest

from fastpath.cluster.etcd_server import EtcdCluster, Member
from tests.conftest import require


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_etcd(directory, members: int = 3) -> EtcdCluster:
    require(shutil.which("etcd") is not None, "etcd is not installed (apt-get install etcd-server)")
    c = EtcdCluster(directory, [Member(f"m{i}", "127.0.0.1", free_port(), free_port())
                                for i in range(members)], token=f"fp-test-{directory.name}")
    c.start()
    return c


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory):
    """One 3-member cluster per module; tests use distinct key prefixes or wipe."""
    c = make_etcd(tmp_path_factory.mktemp("etcd"))
    yield c
    c.stop()


@pytest.fixture
def fresh_etcd(tmp_path):
    """A cluster of its own, for tests that kill members."""
    c = make_etcd(tmp_path / "etcd")
    yield c
    c.stop()
