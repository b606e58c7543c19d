"""inotify(7) on one directory: sleep until a file in it changes, or a timeout.

Why: the embedded datastore's watchers would otherwise poll SQLite; an idle agent then
wakes 50 times a second, which costs little on a fast machine and most of a CPU in a
slow guest. With inotify an idle watcher wakes only for its lease checks, and a change
wakes it at once. The standard library has no inotify; these are three libc calls.
"""

from __future__ import annotations

import ctypes
import os
import select

from fastpath.errors import KernelError
from fastpath.kernel.libc import libc

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

libc.inotify_init1.argtypes = (ctypes.c_int,)
libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


class DirWatch:
    """Wakes on writes to, creations in, and renames into `directory`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise KernelError(os.strerror(e), op="inotify_init1", errno=e)
        self.fd = fd
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(os.fspath(directory)), mask) < 0:
            e = ctypes.get_errno()
            os.close(fd)
            raise KernelError(os.strerror(e), op=f"inotify_add_watch {directory}", errno=e)

    def wait(self, timeout: float) -> bool:
        """True if something changed within `timeout` seconds (the events are drained)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
