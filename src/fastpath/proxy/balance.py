"""Choosing a backend: round robin or least connections over the healthy backends, and
the health state machine (fall consecutive failures -> down, rise successes -> up).

Rule for this module: pure bookkeeping, no sockets. Each worker keeps its own (like
HAProxy processes without shared state): `active` counts this worker's connections,
and each worker runs its own checks, so a dead backend is seen by all within one
check interval x fall.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastpath.proxy.config import Service


@dataclass
class Backend:
    addr: tuple[str, int]
    up: bool = True
    active: int = 0
    fails: int = 0        # consecutive failed checks
    oks: int = 0          # consecutive good checks
    total: int = 0        # connections sent here
    errors: int = 0       # connects refused or timed out, resets mid-stream

    @property
    def label(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"


class Balancer:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.backends = [Backend(a) for a in service.backends]
        self.leastconn = service.balance == "leastconn"
        self._next = 0

    def pick(self, avoid: Backend | None = None, peek: bool = False) -> Backend | None:
        """A healthy backend other than `avoid` (the one a retry gave up on), or None when
        there is none. `peek`: say which, without moving the round robin on."""
        bs = self.backends
        n = len(bs)
        if self.leastconn:
            best = None
            # start after the last pick so that ties rotate instead of piling on one
            for i in range(n):
                b = bs[(self._next + i) % n]
                if b.up and b is not avoid and (best is None or b.active < best.active):
                    best = b
            if best is not None and not peek:
                self._next = (bs.index(best) + 1) % n
            return best
        for i in range(n):
            b = bs[(self._next + i) % n]
            if b.up and b is not avoid:
                if not peek:
                    self._next = (self._next + i + 1) % n
                return b
        return None

    def set_backends(self, service: Service) -> None:
        """A new backend list (reload in place): backends that stay keep their health and
        counts; connections to removed ones run on and finish."""
        old = {b.addr: b for b in self.backends}
        self.service = service
        self.backends = [old.get(a) or Backend(a) for a in service.backends]
        self._next %= max(1, len(self.backends))

    def check_result(self, b: Backend, ok: bool) -> str | None:
        """Record one health check; returns "up"/"down" when the backend changes state."""
        hc = self.service.check
        fall, rise = (hc.fall, hc.rise) if hc else (1, 1)
        if ok:
            b.oks += 1
            b.fails = 0
            if not b.up and b.oks >= rise:
                b.up = True
                return "up"
        else:
            b.fails += 1
            b.oks = 0
            if b.up and b.fails >= fall:
                b.up = False
                return "down"
        return None

    def to_list(self) -> list[dict]:
        return [{"backend": b.label, "up": b.up, "active": b.active, "total": b.total,
                 "errors": b.errors} for b in self.backends]
