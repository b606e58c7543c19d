"""Atomic file writes: a reader sees the old content or the new, never a torn file.

Written to a temporary file in the same directory (rename(2) is atomic only within one
filesystem), then renamed over the target. The temporary name carries the pid and thread
id, so concurrent writers never share one; a writer that dies leaves a `.tmp` file the
next writer ignores. No fsync: these are run-time notes (status, configs regenerated
from state), not the state itself, which SQLite keeps.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes | memoryview,
                 mode: int = 0o644) -> None:
    path = os.fspath(path)
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.{threading.get_native_id()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


SUN_PATH_MAX = 107                       # sun_path is 108 bytes with the NUL (unix(7))
SHORT_SOCKET_DIR = Path("/run/fastpath/sock")


def socket_path(path: str | Path) -> Path:
    """`path` for a Unix socket, or, when it would not fit sun_path (a deep state dir,
    such as a demo node agent's), a short stand-in named after it: the same long path
    always maps to the same short one, so every process finds it."""
    p = Path(path)
    if len(os.fsencode(str(p))) <= SUN_PATH_MAX:
        return p
    short = SHORT_SOCKET_DIR / f"{hashlib.sha256(os.fsencode(str(p))).hexdigest()[:24]}{p.suffix}"
    short.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return short
