"""TCP health checks of a worker's backends: every `interval`, a non-blocking connect to
each backend, in the worker's own epoll. A backend goes down after `fall` failed checks
and up after `rise` good ones (balance.Balancer keeps the counts); a check that neither
connects nor fails within `timeout` failed. Each check closes with RST, so checks leave
no TIME_WAIT behind. Health is per worker: workers do not share it.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from collections.abc import Iterable

from fastpath.proxy.balance import Backend
from fastpath.proxy.service import ServiceState
from fastpath.proxy.splice import reset_close

log = logging.getLogger("fastpath.proxy")


class HealthChecks:
    def __init__(self, ep: select.epoll) -> None:
        self.ep = ep
        self.running: dict[int, tuple[ServiceState, Backend, socket.socket, float]] = {}

    def __contains__(self, fd: int) -> bool:
        return fd in self.running

    def start(self, services: Iterable[ServiceState], now: float) -> None:
        """Start the checks that are due (one at a time per backend)."""
        for st in services:
            hc = st.svc.check
            if hc is None or now < st.next_check:
                continue
            st.next_check = now + hc.interval
            for be in st.balancer.backends:
                if any(b is be for _, b, _, _ in self.running.values()):
                    continue  # previous check still running
                try:
                    s = socket.socket(socket.AF_INET6 if ":" in be.addr[0] else socket.AF_INET,
                                      socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                except OSError:
                    continue  # out of fds: skip this round rather than mark it down
                err = s.connect_ex(be.addr)
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    self._result(st, be, False, os.strerror(err))
                    continue
                self.running[s.fileno()] = (st, be, s, now + hc.timeout)
                self.ep.register(s.fileno(), select.EPOLLOUT)

    def on_event(self, fd: int) -> None:
        """The check's connect finished: SO_ERROR says how."""
        st, be, s, _ = self.running.pop(fd)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.ep.unregister(fd)
        reset_close(s)
        self._result(st, be, err == 0, os.strerror(err) if err else "")

    def expire(self, now: float) -> None:
        for fd, (st, be, s, deadline) in list(self.running.items()):
            if now >= deadline:
                self.running.pop(fd)
                self.ep.unregister(fd)
                reset_close(s)
                self._result(st, be, False, "timeout")

    def close(self) -> None:
        for _, _, s, _ in list(self.running.values()):
            s.close()
        self.running.clear()

    @staticmethod
    def _result(st: ServiceState, be: Backend, ok: bool, why: str) -> None:
        change = st.balancer.check_result(be, ok)
        if change == "down":
            log.warning("%s: backend %s is down (%s)", st.svc.name, be.label, why or "check failed")
        elif change == "up":
            log.warning("%s: backend %s is up", st.svc.name, be.label)
