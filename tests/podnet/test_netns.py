"""netns: open by name, path, fd, None; never create on open; reject what is no netns."""

from __future__ import annotations

import os

import pytest

from fastpath import naming
from fastpath.errors import AlreadyExists, NotFound, UsageError
from fastpath.kernel import netns
from fastpath.podnet import routing


def test_names_are_file_names():
    with pytest.raises(UsageError):
        netns.path_of("../etc")
    with pytest.raises(UsageError):
        netns.path_of("")


def test_routing_registry():
    assert "static" in routing.available()
    assert routing.get().name == routing.DEFAULT
    with pytest.raises(UsageError, match="unknown routing backend 'nosuch'"):
        routing.get("nosuch")


@pytest.mark.root
def test_open_every_kind_of_spec_and_never_create():
    name = naming.name("bench-ns")
    netns.create(name)
    try:
        with pytest.raises(AlreadyExists):
            netns.create(name)
        by_name = netns.Netns.open(name)
        by_path = netns.Netns.open(f"/run/netns/{name}")
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        by_fd = netns.Netns.open(fd)
        os.close(fd)
        assert by_name.inode() == by_path.inode() == by_fd.inode()
        with netns.Netns.open(None) as cur, netns.Netns.open(f"/proc/{os.getpid()}/ns/net") as me:
            assert cur.inode() == me.inode() != by_name.inode()
        for n in (by_name, by_path, by_fd):
            n.close()
            n.close()  # closes once
            assert n.fd == -1
        with pytest.raises(UsageError, match="not a network namespace"):
            netns.Netns.open("/etc/hostname")
        with pytest.raises(UsageError, match="not a network namespace"):
            netns.Netns.open(f"/proc/{os.getpid()}/ns/mnt")
    finally:
        assert netns.delete(name) is True
    assert netns.delete(name) is False
    with pytest.raises(NotFound, match=f"netns {name} does not exist"):
        netns.Netns.open(name)
    assert not os.path.exists(f"/run/netns/{name}")
    # a stale mount point (a crash between creating the file and mounting it) is not a netns
    open(f"/run/netns/{name}", "w").close()
    try:
        assert not netns.exists(name)
        with pytest.raises(NotFound, match="stale"):
            netns.Netns.open(name)
    finally:
        assert netns.delete(name) is True
