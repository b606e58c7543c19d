"""memfd regions: anonymous files in RAM, sized, sealed and mapped MAP_SHARED.

Kernel facts relied on (memfd_create(2), fcntl(2) "File Sealing"):
- A memfd created with MFD_ALLOW_SEALING accepts F_ADD_SEALS; without it the file starts
  sealed with F_SEAL_SEAL and can never be sealed further.
- F_SEAL_SHRINK makes ftruncate to a smaller size fail with EPERM: a receiver that sees it
  knows the pages it maps cannot vanish under it (no SIGBUS on access).
- F_SEAL_WRITE is refused with EBUSY while any writable shared mapping exists;
  F_SEAL_FUTURE_WRITE (5.1) keeps existing writable maps but refuses new ones and write(2).
- MFD_NOEXEC_SEAL (6.3) makes the file non-executable for good; older kernels answer EINVAL,
  and we retry without it.

We always create with MFD_CLOEXEC | MFD_ALLOW_SEALING so that a region can be handed over
sealed; the fd is owned by the Region and set to -1 once closed.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

from fastpath.errors import KernelError
from fastpath.kernel.fd import Fd

MFD_CLOEXEC = getattr(os, "MFD_CLOEXEC", 0x0001)
MFD_ALLOW_SEALING = getattr(os, "MFD_ALLOW_SEALING", 0x0002)
MFD_NOEXEC_SEAL = 0x0008

F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)
F_GET_SEALS = getattr(fcntl, "F_GET_SEALS", 1034)
F_SEAL_SEAL = getattr(fcntl, "F_SEAL_SEAL", 0x0001)
F_SEAL_SHRINK = getattr(fcntl, "F_SEAL_SHRINK", 0x0002)
F_SEAL_GROW = getattr(fcntl, "F_SEAL_GROW", 0x0004)
F_SEAL_WRITE = getattr(fcntl, "F_SEAL_WRITE", 0x0008)
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)

MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)

PAGE_SIZE = mmap.PAGESIZE


def memfd_create(name: str) -> int:
    """A sealable, close-on-exec memfd; non-executable where the kernel supports it."""
    flags = MFD_CLOEXEC | MFD_ALLOW_SEALING
    try:
        return os.memfd_create(name, flags | MFD_NOEXEC_SEAL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: kernel before 6.3 knows no MFD_NOEXEC_SEAL
            raise KernelError.from_oserror(f"memfd_create {name}", e) from e
    try:
        return os.memfd_create(name, flags)
    except OSError as e:
        raise KernelError.from_oserror(f"memfd_create {name}", e) from e


def get_seals(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, F_GET_SEALS)
    except OSError as e:
        raise KernelError.from_oserror("fcntl F_GET_SEALS", e) from e


def add_seals(fd: int, seals: int) -> None:
    try:
        fcntl.fcntl(fd, F_ADD_SEALS, seals)
    except OSError as e:
        raise KernelError.from_oserror(f"fcntl F_ADD_SEALS {seals:#x}", e) from e


class Region:
    """A memfd of `size` bytes mapped MAP_SHARED, owned by this object.

    `buf` is a writable (or read-only) memoryview over the whole mapping. `close()` releases
    the view, unmaps and closes the fd exactly once; afterwards `fd` is -1.
    """

    def __init__(self, fd: int, size: int, *, writable: bool = True, populate: bool = False) -> None:
        self._owned = Fd(fd, "memfd")
        self.size = size
        self.writable = writable
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        try:
            self._map = mmap.mmap(fd, size, flags=flags, prot=prot) if size else None
        except OSError as e:
            self._owned.detach()  # not ours yet: the caller closes it on failure
            raise KernelError.from_oserror(f"mmap memfd {size} bytes", e) from e
        self.buf = memoryview(self._map) if self._map is not None else memoryview(b"")

    @classmethod
    def create(cls, size: int, name: str = "fp-region", *, populate: bool = False) -> "Region":
        """A new zero-filled region of `size` bytes; `populate` pre-faults every page."""
        if size < 0:
            raise ValueError("size must be >= 0")
        fd = memfd_create(name)
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            os.close(fd)
            raise KernelError.from_oserror(f"ftruncate memfd to {size}", e) from e
        try:
            return cls(fd, size, populate=populate)
        except BaseException:
            os.close(fd)
            raise

    @property
    def seals(self) -> int:
        return get_seals(self.fd)

    def seal(self, *, write: bool = False, future_write: bool = False, final: bool = False) -> None:
        """Fix the size (SHRINK|GROW); with `write` or `future_write` also forbid writes.

        F_SEAL_WRITE is refused (EBUSY) while any shared mapping that may become writable
        exists, and a PROT_READ MAP_SHARED map of an O_RDWR fd still may (VM_MAYWRITE); so a
        region sealed with `write` is unmapped, sealed, then mapped again read-only (allowed
        since 6.7). `future_write` keeps this mapping writable for the sender while every
        later mapping, the receivers', is read-only. `final` adds F_SEAL_SEAL.
        """
        seals = F_SEAL_SHRINK | F_SEAL_GROW
        if future_write:
            seals |= F_SEAL_FUTURE_WRITE
        if final:
            seals |= F_SEAL_SEAL
        if not write:
            add_seals(self.fd, seals)
            return
        self._unmap()
        try:
            add_seals(self.fd, seals | F_SEAL_WRITE)
        finally:
            self._map_view(writable=not (self.seals & F_SEAL_WRITE))

    def populate(self) -> None:
        """Fault every page in now (MADV_POPULATE_WRITE, 5.14), so first writes do not fault."""
        if self._map is None:
            return
        try:
            self._map.madvise(MADV_POPULATE_WRITE)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise KernelError.from_oserror("madvise MADV_POPULATE_WRITE", e) from e
            for off in range(0, self.size, PAGE_SIZE):  # older kernel: touch each page
                self._map[off] = self._map[off]

    def _unmap(self) -> None:
        self.buf.release()
        if self._map is not None:
            self._map.close()
            self._map = None

    def _map_view(self, writable: bool) -> None:
        self.writable = writable
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self._map = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED, prot=prot) if self.size else None
        self.buf = memoryview(self._map) if self._map is not None else memoryview(b"")

    @property
    def fd(self) -> int:
        """The memfd's number, -1 once closed."""
        return self._owned.fd

    def close(self) -> None:
        if self._owned.fd < 0:
            return
        self._unmap()
        self._owned.close()

    def __enter__(self) -> "Region":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
