"""Which kernel features shared memory (and the RCU tables built on it) uses, probed on
the running kernel for `fastpath doctor`. Each probe makes one small object and closes it.

- memfd_create with MFD_ALLOW_SEALING, and F_SEAL_SHRINK (3.17): a receiver maps only a
  region sealed against shrinking, so without seals shm is refused.
- MFD_NOEXEC_SEAL (6.3): memfd.memfd_create retries without it on EINVAL (6.1 answers so).
- MADV_POPULATE_WRITE (5.14): Region.populate touches each page instead.
- pidfd_open (5.3): Channel watches its peer through a pidfd; without it the socket's EOF
  alone tells that the peer died.
"""

from __future__ import annotations

import errno
import mmap
import os

from fastpath import features as F
from fastpath.shm import memfd as M

MECH = "shm"


def findings() -> list[F.Finding]:
    return [_seals(), _noexec(), _populate(), _pidfd()]


def _seals() -> F.Finding:
    name = "memfd seals"
    try:
        fd = os.memfd_create("fp-probe", M.MFD_CLOEXEC | M.MFD_ALLOW_SEALING)
    except OSError as e:
        return F.refused(name, MECH, f"memfd_create: {errno.errorcode.get(e.errno or 0, e.errno)}",
                         "regions are handed over sealed; shm and the RCU tables need it")
    try:
        M.add_seals(fd, M.F_SEAL_SHRINK | M.F_SEAL_GROW)
        got = M.get_seals(fd)
    except Exception as e:  # KernelError from the fcntl wrappers
        return F.refused(name, MECH, str(e), "a receiver maps only regions sealed against "
                                             "shrinking")
    finally:
        os.close(fd)
    return F.used(name, MECH, f"F_ADD_SEALS ok, seals={got:#x}")


def _noexec() -> F.Finding:
    name = "MFD_NOEXEC_SEAL"
    try:
        os.close(os.memfd_create("fp-probe", M.MFD_CLOEXEC | M.MFD_ALLOW_SEALING
                                 | M.MFD_NOEXEC_SEAL))
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return F.fallback(name, MECH, "EINVAL (6.3+)",
                          "regions are created without it (the seals still hold)")
    return F.used(name, MECH, "memfd_create accepts it")


def _populate() -> F.Finding:
    name = "MADV_POPULATE_WRITE"
    m = mmap.mmap(-1, mmap.PAGESIZE * 4)
    try:
        m.madvise(M.MADV_POPULATE_WRITE)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        return F.fallback(name, MECH, f"{errno.errorcode[e.errno]} (5.14+)",
                          "pre-faulting touches every page instead")
    finally:
        m.close()
    return F.used(name, MECH, "madvise accepts it")


def _pidfd() -> F.Finding:
    name = "pidfd_open"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        return F.fallback(name, MECH, "ENOSYS (5.3+)",
                          "a channel notices a dead peer by its socket's EOF alone")
    return F.used(name, MECH, "pidfd_open(self) ok")
