import os

import pytest

from fastpath.shm.memfd import Region
from fastpath.shm.pool import RegionPool, size_class


def test_size_classes():
    assert size_class(0) == size_class(1) == 4096
    assert size_class(4097) == 8192
    assert size_class(1 << 20) == 1 << 20
    with pytest.raises(ValueError):
        size_class(-1)


def _rss_kib(region: Region) -> int:
    """Resident KiB of this region's mapping, from /proc/self/smaps."""
    name = os.readlink(f"/proc/self/fd/{region.fd}").split(" (deleted)")[0]
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.endswith("(deleted)") and name in line:
            for sub in lines[i + 1:]:
                if sub.startswith("Rss:"):
                    return int(sub.split()[1])
    raise AssertionError("mapping not found")


def test_get_prefaults_and_put_reuses():
    with RegionPool(max_bytes=4 << 20, name="fp-pooltest") as pool:
        r = pool.get(1 << 20)
        assert r.size == 1 << 20
        assert _rss_kib(r) == 1024  # every page faulted in before first use
        fd = r.fd
        assert pool.put(r)
        r2 = pool.get(600_000)
        assert r2.fd == fd and pool.reused == 1 and pool.created == 1
        pool.put(r2)


def test_put_refuses_what_cannot_be_reused():
    with RegionPool(max_bytes=8192) as pool:
        a, b, c = pool.get(4096), pool.get(4096), pool.get(4096)
        assert pool.put(a) and pool.put(b)
        assert not pool.put(c) and c.fd == -1          # over the cap: closed
        d = pool.get(4096)
        d.seal(future_write=True)
        assert not pool.put(d) and d.fd == -1          # write-sealed: never pooled
        odd = Region.create(5000)
        assert not pool.put(odd) and odd.fd == -1      # not a pool size class
    assert pool.idle_bytes == 0


def _minor_faults() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_pooled_region_takes_no_page_fault_on_first_write():
    size = 4 << 20
    data = b"\x5a" * size
    with RegionPool(max_bytes=size) as pool:
        r = pool.get(size)
        f0 = _minor_faults()
        r.buf[:] = data
        pooled = _minor_faults() - f0
        pool.put(r)
    fresh = Region.create(size)
    f0 = _minor_faults()
    fresh.buf[:] = data
    unfaulted = _minor_faults() - f0
    fresh.close()
    assert unfaulted >= size // 4096 // 2   # a fresh region faults (about) once per page
    assert pooled < 16                      # a pooled one does not
