"""The SharedTable region's own layout: its header (geometry, the published version, the
grace-period token, the writer's statistics) and its reader slots, and reading the
statistics back (what `fastpath rcu stats` shows). The versions' layout is layout.py; the
publishing and reclaiming order is table.py.

    header   HEADER_SIZE bytes at 0: the H_* words below (all u64, 8-byte aligned)
    slots    nslots x SLOT_SIZE bytes: qs | tid | pid | starttime | registered_ns (S_*)
    versions nversions x version_size bytes, each one table version (layout.py)
"""

from __future__ import annotations

import struct

from fastpath.errors import UsageError
from fastpath.rcu import liveness
from fastpath.shm.memfd import PAGE_SIZE

REGION_MAGIC = int.from_bytes(b"FPRCUTB1", "little")
HEADER_SIZE = 256
SLOT_SIZE = 64

# Header words (byte offsets).
H_MAGIC = 0
H_NSLOTS = 8
H_NVERSIONS = 16
H_VERSION_SIZE = 24
H_SLOTS_OFF = 32
H_VERSIONS_OFF = 40
H_CURRENT = 48          # offset of the published version; 0 before the first publish
H_TOKEN = 56            # grace-period token, starts at 1 (qs 0 means offline)
H_WRITER_PID = 64
H_PUBLISHES = 72
H_GP_COUNT = 80
H_GP_TOTAL_NS = 88
H_GP_MAX_NS = 96
H_PENDING = 104         # retired versions waiting for a grace period
H_STALLS = 112
H_DEAD = 120            # reader slots freed because their thread died
H_CREATED_NS = 128      # wall clock
H_STALL_AFTER_NS = 136
H_ENTRIES = 144
H_LAST_STALL_TID = 152
H_SYNC_COUNT = 160      # synchronize() calls, part of H_GP_COUNT
H_UPDATED_NS = 168      # wall clock of the last statistics update

# Slot words.
S_QS = 0
S_TID = 8
S_PID = 16
S_START = 24
S_REGISTERED_NS = 32

_U64 = struct.Struct("<Q")


def _round(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def geometry(capacity: int, readers: int, versions: int) -> tuple[int, int, int]:
    """(version_size, versions_off, region size) for the requested capacity."""
    if versions < 2:
        raise UsageError("a SharedTable needs at least 2 versions (one published, one to build)")
    if readers < 1:
        raise UsageError("a SharedTable needs at least 1 reader slot")
    vsize = _round(max(capacity, 1024), 64)
    voff = _round(HEADER_SIZE + readers * SLOT_SIZE, 64)
    return vsize, voff, _round(voff + versions * vsize, PAGE_SIZE)


def read_stats(buf) -> dict:
    """Statistics and readers from a table's header and slots; plain reads, so it works on a
    read-only mapping (fastpath rcu stats maps /proc/<pid>/fd/<n> read-only)."""
    def w(off: int) -> int:
        return _U64.unpack_from(buf, off)[0]   # aligned u64: one load on x86-64 and arm64
    if len(buf) < HEADER_SIZE or w(H_MAGIC) != REGION_MAGIC:
        raise UsageError("not a fastpath SharedTable")
    nslots, soff = w(H_NSLOTS), w(H_SLOTS_OFF)
    readers = []
    for i in range(nslots):
        b = soff + i * SLOT_SIZE
        tid = w(b + S_TID)
        if tid:
            qs = w(b + S_QS)
            readers.append({"slot": i, "pid": w(b + S_PID), "tid": tid, "online": qs != 0,
                            "qs_token": qs, "alive": liveness.alive(tid, w(b + S_START))})
    gp = w(H_GP_COUNT)
    return {
        "writer_pid": w(H_WRITER_PID), "entries": w(H_ENTRIES), "publishes": w(H_PUBLISHES),
        "token": w(H_TOKEN), "grace_periods": gp, "synchronize_calls": w(H_SYNC_COUNT),
        "gp_mean_ms": (w(H_GP_TOTAL_NS) / gp / 1e6) if gp else 0.0,
        "gp_max_ms": w(H_GP_MAX_NS) / 1e6, "pending": w(H_PENDING), "stalls": w(H_STALLS),
        "dead_readers": w(H_DEAD), "last_stalled_tid": w(H_LAST_STALL_TID),
        "versions": w(H_NVERSIONS), "version_size": w(H_VERSION_SIZE), "reader_slots": nslots,
        "readers": readers, "readers_online": sum(r["online"] for r in readers),
        "stall_after_s": w(H_STALL_AFTER_NS) / 1e9, "created_ns": w(H_CREATED_NS),
        "updated_ns": w(H_UPDATED_NS),
    }
