"""Atomic file writes: a reader sees the old content or the new, never a torn file.

Written to a temporary file in the same directory (rename(2) is atomic only within one
filesystem), then renamed over the target. The temporary name carries the pid and thread
id, so concurrent writers never share one; a writer that dies leaves a `.tmp` file the
next writer ignores. No fsync: these are run-time notes (status, configs regenerated
from state), not the state itself, which SQLite keeps.
"""

from __future__ import annotations

import os
import threading


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
