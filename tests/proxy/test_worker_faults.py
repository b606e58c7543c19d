"""A worker whose syscall edge fails with an errno nobody expects (ENOMEM from splice)
resets that one connection, logs it, and goes on serving the next ones."""

import errno
import os
import signal
import socket

from fastpath.proxy import config
from fastpath.proxy.master import make_listener
from fastpath.proxy.splice import SocketOps
from tests.proxy.conftest import Backend, echo, loop_addr


class FailOnce(SocketOps):
    failed = False

    def splice(self, fd_in, fd_out, n):
        if not FailOnce.failed:
            FailOnce.failed = True
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return super().splice(fd_in, fd_out, n)


def test_unexpected_errno_resets_one_connection_only():
    addr = loop_addr()
    be = Backend(addr, 9001, echo)
    cfg = config.parse(f"global\n  workers 1\n  mode splice\n"
                       f"service s\n  listen {addr}:9000\n  backend {addr}:9001\n")
    ls = make_listener((addr, 9000))
    pid = os.fork()
    if pid == 0:
        try:
            from fastpath.proxy.worker import Worker
            os._exit(Worker(cfg, {"s": ls}, 0, 1, ops=FailOnce()).run())
        except BaseException:
            os._exit(3)
    try:
        ls.close()
        s = socket.create_connection((addr, 9000), timeout=5)
        s.sendall(b"first")
        try:
            got = s.recv(10)
        except ConnectionResetError:
            got = b"reset"
        assert got == b"reset"   # carried as a reset, never a clean FIN the client trusts
        s.close()
        s = socket.create_connection((addr, 9000), timeout=5)
        s.sendall(b"second")
        assert s.recv(10) == b"second"
        s.close()
    finally:
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        be.close()
    assert os.waitstatus_to_exitcode(status) == 0
