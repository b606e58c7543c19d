"""libc, for the calls Python 3.11 does not wrap (setns, unshare, mount, umount2; os.setns
and os.unshare arrive in 3.12).

Reached through the process's own symbols: ctypes.util.find_library("c") runs ldconfig,
~40 ms on every start (measured on the CNI no-agent path).
"""

from __future__ import annotations

import ctypes
import os

from fastpath.errors import KernelError

CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
libc.unshare.argtypes = (ctypes.c_int,)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_void_p)
libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def check(rc: int, op: str) -> None:
    """libc's convention: -1 (non-zero) and errno. Raise KernelError carrying both."""
    if rc != 0:
        e = ctypes.get_errno()
        raise KernelError(os.strerror(e), op=op, errno=e)


def setns_raw(fd: int) -> int:
    """setns(fd, CLONE_NEWNET) returning errno (0 on success), for a forked child before
    exec, where raising is not an option: it may only write and _exit."""
    if libc.setns(fd, CLONE_NEWNET) != 0:
        return ctypes.get_errno() or 1
    return 0
