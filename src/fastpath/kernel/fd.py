"""An owned file descriptor: closed exactly once, then -1, so a stale number can never be
closed or used again by mistake (the number may already name another file)."""

from __future__ import annotations

import contextlib
import os


class Fd:
    __slots__ = ("fd", "what")

    def __init__(self, fd: int, what: str = "") -> None:
        self.fd = fd
        self.what = what

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def fileno(self) -> int:
        if self.fd < 0:
            raise ValueError(f"{self.what or 'fd'} is closed")
        return self.fd

    def detach(self) -> int:
        """Hand the number to a new owner; this holder forgets it."""
        fd, self.fd = self.fd, -1
        return fd

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.what!r}, fd={self.fd})"
