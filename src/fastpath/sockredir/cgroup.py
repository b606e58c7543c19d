"""cgroup v2 for sockredir: where the hierarchy is mounted, the accel cgroup fastpath
creates (`fp-[tag-]accel` under the root), moving processes in and out.

Rules: never the root cgroup (attaching sockops there would redirect every TCP socket on
the machine); a `--cgroup PATH` must lie inside the cgroup2 mount.
"""

from __future__ import annotations

import errno
import os
import time

from fastpath import naming
from fastpath.errors import KernelError, NotFound, UsageError, kernel_call
from fastpath.kernel import cgroup2

ACCEL_PART = "accel"


def root() -> str:
    """The cgroup2 mount point (here /sys/fs/cgroup/unified; /sys/fs/cgroup in the guests)."""
    return cgroup2.root()


def default_path() -> str:
    return os.path.join(root(), naming.name(ACCEL_PART))


def resolve(path: str | None) -> str:
    """An absolute cgroup directory for --cgroup (absolute, or relative to the cgroup2 root)."""
    top = os.path.realpath(root())
    if path is None:
        return default_path()
    full = os.path.realpath(path if os.path.isabs(path) else os.path.join(top, path))
    if full == top:
        raise UsageError("refusing the root cgroup: every TCP socket on the machine would be "
                         "redirected", hint="use a child cgroup, e.g. the default fp-accel")
    if not full.startswith(top + "/"):
        raise UsageError(f"{path} is not inside the cgroup2 hierarchy at {top}")
    if not os.path.isdir(full):
        raise NotFound(f"cgroup {full} does not exist")
    return full


def create(path: str) -> bool:
    """mkdir the cgroup; True when this call created it."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise KernelError.from_oserror(f"create cgroup {path}", e) from e


def procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def move(pid: int, path: str) -> None:
    """Move a process (0: the caller) into the cgroup."""
    def write():
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    kernel_call(f"move pid {pid or os.getpid()} into {path}", write)


def remove(path: str) -> list[str]:
    """Move any processes left to the parent and remove the cgroup; idempotent."""
    if not os.path.isdir(path):
        return []
    parent = os.path.dirname(path)
    for pid in procs(path):
        try:
            move(pid, parent)
        except KernelError as e:
            if e.errno != errno.ESRCH:
                raise
    for _ in range(50):
        try:
            os.rmdir(path)
            return [f"cgroup {path}"]
        except FileNotFoundError:
            return []
        except OSError as e:
            # EBUSY: a process was exiting or just moved; the kernel updates populated lazily
            if e.errno != errno.EBUSY:
                raise KernelError.from_oserror(f"remove cgroup {path}", e) from e
            for pid in procs(path):
                try:
                    move(pid, parent)
                except KernelError:
                    pass
            time.sleep(0.05)
    raise KernelError("still busy", op=f"remove cgroup {path}", errno=errno.EBUSY)
