"""Which of the proxy's sockets may receive bytes by sk_msg redirect (fastpath accel),
so that their reading direction copies instead of splicing.

Kernel facts: a socket joins a SOCKHASH from the sockops program of the cgroup its
process is in (effective programs: attached to that cgroup or inherited from an
ancestor), and an sk_msg redirect needs the target socket in the map. So if no sockops
program is effective for this process's cgroup, none of its sockets can be a redirect
target, and the exact per-socket check (`fastpath.sockredir.query.is_accelerated`, a
few syscalls plus a map lookup) is skipped. The cgroup is asked again every
RECHECK_S seconds: accel can be enabled while the proxy runs.
"""

from __future__ import annotations

import os
import time

from fastpath.errors import FastpathError
from fastpath.kernel import cgroup2
from fastpath.sockredir import libbpf as B
from fastpath.sockredir.query import is_accelerated

RECHECK_S = 1.0


def _own_cgroup() -> str | None:
    root = cgroup2.mount_point()
    if root is None:
        return None
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(root, line.strip()[3:].lstrip("/"))
    return None


class AccelProbe:
    def __init__(self) -> None:
        self._possible = False
        self._checked = 0.0

    def _sockops_effective(self) -> bool:
        path = _own_cgroup()
        if path is None:
            return False
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            return bool(B.prog_query(fd, B.BPF_CGROUP_SOCK_OPS, path, effective=True))
        except FastpathError:  # no libbpf, or the query refused: cannot know, so assume so
            return True
        finally:
            os.close(fd)

    def possible(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self._checked >= RECHECK_S:
            self._checked = now
            self._possible = self._sockops_effective()
        return self._possible

    def is_accelerated(self, sock) -> bool:
        return is_accelerated(sock)
