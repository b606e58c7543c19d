"""RegionPool: reusable, pre-faulted memfd regions.

A fresh region faults one page per 4 KiB on its first write: measured here, filling a fresh
region runs at ~0.21 GB/s against ~10 GB/s for a faulted one. The pool pays that once, at
creation (MADV_POPULATE_WRITE, 5.14, which allocates and maps every page writable; our
mappings are MAP_SHARED, where MAP_POPULATE only read-faults), and hands the region out
again and again.

Three verbs: get(size) -> Region, put(region), kill(region). Sizes are rounded up to a
power-of-two class (at least a page) so that regions are reusable across nearby sizes.
put() keeps a region only if it can be written again the same way: it is still open and
writable, carries no write seal, and the pool stays under its byte cap; anything else is
closed (a region that cannot be reused is destroyed, never pooled).
"""

from __future__ import annotations

import threading

from fastpath.shm.memfd import F_SEAL_FUTURE_WRITE, F_SEAL_WRITE, PAGE_SIZE, Region


def size_class(size: int) -> int:
    """The pooled size for a request: the next power of two, at least one page."""
    if size < 0:
        raise ValueError("size must be >= 0")
    n = max(size, PAGE_SIZE)
    return 1 << (n - 1).bit_length()


class RegionPool:
    """Free lists of pre-faulted regions per size class, capped at `max_bytes` idle."""

    def __init__(self, max_bytes: int = 256 << 20, name: str = "fp-pool") -> None:
        self.max_bytes = max_bytes
        self.name = name
        self._free: dict[int, list[Region]] = {}
        self._idle_bytes = 0
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0

    def get(self, size: int) -> Region:
        """A zero-copy-ready region of at least `size` bytes, every page already faulted.
        A reused region holds whatever its last user wrote."""
        cls = size_class(size)
        with self._lock:
            free = self._free.get(cls)
            if free:
                r = free.pop()
                self._idle_bytes -= r.size
                self.reused += 1
                return r
            self.created += 1
        r = Region.create(cls, self.name)
        try:
            r.populate()
        except BaseException:
            r.close()
            raise
        return r

    def put(self, region: Region) -> bool:
        """Give a region back; True if pooled, False if it was closed instead."""
        if region.fd < 0:
            return False
        if (not region.writable or region.size != size_class(region.size)
                or region.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)):
            region.close()
            return False
        with self._lock:
            if self._idle_bytes + region.size <= self.max_bytes:
                self._free.setdefault(region.size, []).append(region)
                self._idle_bytes += region.size
                return True
        region.close()
        return False

    def kill(self, region: Region) -> None:
        """Destroy a region that must not be reused (e.g. still mapped by a peer that writes)."""
        region.close()

    @property
    def idle_bytes(self) -> int:
        return self._idle_bytes

    def close(self) -> None:
        with self._lock:
            free, self._free, self._idle_bytes = self._free, {}, 0
        for regions in free.values():
            for r in regions:
                r.close()

    def __enter__(self) -> "RegionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
