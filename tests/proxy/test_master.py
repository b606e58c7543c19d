import socket

import pytest

from fastpath.errors import KernelError
from fastpath.proxy import config
from fastpath.proxy.master import ListenerSet, _backends_only
from tests.proxy.conftest import loop_addr


def cfg(addr, backends, extra=""):
    return config.parse(f"global\n  workers 2\n{extra}service s\n  listen {addr}:9000\n" +
                        "".join(f"  backend {b}\n" for b in backends))


def test_backends_only_change_is_told_apart():
    a = loop_addr()
    assert _backends_only(cfg(a, ["10.0.0.1:80"]), cfg(a, ["10.0.0.2:80", "10.0.0.3:80"]))
    assert not _backends_only(cfg(a, ["10.0.0.1:80"]), cfg(a, ["10.0.0.1:80"], "  mode copy\n"))
    assert not _backends_only(cfg(a, ["10.0.0.1:80"]), cfg(loop_addr(), ["10.0.0.1:80"]))


def test_listener_set_keeps_sockets_across_generations_and_binds_all_or_nothing():
    a = loop_addr()
    ls = ListenerSet()
    try:
        first = ls.prepare(cfg(a, ["10.0.0.1:80"]))
        assert len(first) == 2                                  # one socket per worker slot
        again = ls.prepare(cfg(a, ["10.0.0.9:80"]))
        assert [x["s"] for x in again] == [x["s"] for x in first]   # the same sockets
        # a second service whose address is taken by someone else: nothing new is kept
        blocker = socket.socket()
        b = loop_addr()
        blocker.bind((b, 9100))
        blocker.listen(1)
        bad = config.parse(f"global\n  workers 2\nservice s\n  listen {a}:9000\n  backend 1.1.1.1:1\n"
                           f"service t\n  listen {b}:9100\n  backend 1.1.1.1:1\n")
        with pytest.raises(KernelError) as ei:
            ls.prepare(bad)
        assert f"listen on {b}:9100" in str(ei.value)
        assert len(ls.socks) == 2
        blocker.close()
        one = config.parse(f"global\n  workers 1\nservice s\n  listen {a}:9000\n"
                           "  backend 1.1.1.1:1\n")
        ls.retire_unused(one)                                   # slot 1 is not served any more
        assert list(ls.socks) == [((a, 9000), 0)]
    finally:
        ls.close()
