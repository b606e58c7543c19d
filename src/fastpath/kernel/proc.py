"""Is a process alive? One rule for every caller (proxy masters and workers, BIRD, RCU
readers), from /proc/<pid>/stat (proc(5)):

- no /proc entry: dead (never existed, or reaped);
- state Z (zombie) or X (dead): dead. A process killed but not yet reaped holds no
  resources we care about, and on machines whose PID 1 reaps no orphans a zombie lingers
  for ever;
- otherwise alive. /proc is readable for every pid, so no permission question arises
  (os.kill(pid, 0) answers EPERM for another user's process and cannot see zombies).

Field 22 (starttime, clock ticks since boot) names one task for the machine's life: a pid
is reused only after the old task is reaped, and the new one starts later.
"""

from __future__ import annotations

import os
import signal
import time


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after comm (state first), None when there is none.
    comm (field 2) may hold spaces and parentheses: split after the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:].decode().split()


def alive(pid: int) -> bool:
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X", "x")


def starttime(pid: int) -> int | None:
    """Start time of `pid` (or a thread id) in clock ticks since boot; None if gone."""
    f = stat_fields(pid)
    return int(f[19]) if f else None


def boot_id() -> str:
    """This boot of this machine (proc(5): /proc/sys/kernel/random/boot_id): a pid and a
    start time name one process only together with it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def runs(pid: int, start: int) -> bool:
    """Whether the process that started at `start` (clock ticks since boot) as `pid` still
    runs: alive, and the pid not reused since."""
    f = stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X", "x") and int(f[19]) == start


def terminate(pids: list[int], grace: float) -> None:
    """SIGTERM each of `pids`, wait up to `grace` seconds for them to die, SIGKILL the rest."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if alive(p)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
