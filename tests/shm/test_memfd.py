import errno
import os

import pytest

from fastpath.errors import KernelError
from fastpath.shm.memfd import F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_WRITE, Region


def test_region_is_shared_zeroed_and_closes_once():
    r = Region.create(8192, "fp-test")
    assert bytes(r.buf[:16]) == bytes(16)
    r.buf[0:5] = b"hello"
    assert os.pread(r.fd, 5, 0) == b"hello"  # the mapping and the file are one
    fd = r.fd
    r.close()
    assert r.fd == -1
    r.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_seal_fixes_size():
    with Region.create(4096) as r:
        r.seal()
        assert r.seals & (F_SEAL_SHRINK | F_SEAL_GROW) == F_SEAL_SHRINK | F_SEAL_GROW
        with pytest.raises(OSError) as ei:
            os.ftruncate(r.fd, 0)
        assert ei.value.errno == errno.EPERM


def test_write_seal_remaps_read_only():
    with Region.create(4096) as r:
        r.buf[0] = 7
        r.seal(write=True)
        assert r.seals & F_SEAL_WRITE
        assert r.buf.readonly and r.buf[0] == 7
        with pytest.raises(OSError):
            os.pwrite(r.fd, b"x", 0)


def test_populate_and_bad_seal_errors():
    with Region.create(1 << 20) as r:
        r.populate()
        r.seal(final=True)
        with pytest.raises(KernelError) as ei:
            r.seal(future_write=True)
        assert ei.value.errno == errno.EPERM
