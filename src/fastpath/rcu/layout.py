"""The byte layout of one SharedTable version: an open-addressing hash table in a buffer.

Pure: functions over any buffer (a bytearray in the unit tests, a memfd mapping in
SharedTable). No atomics here; the publishing order lives in table.py.

A version occupies one fixed-size buffer of `size` bytes at offset `base`:

    +0   magic    u64   VERSION_MAGIC; poison (0xDE..) once the buffer is reclaimed
    +8   gen      u64   publish number, for readers that check a snapshot stayed intact
    +16  nbuckets u32 | count u32       nbuckets is a power of two
    +24  data_end u32 | tombs u32       bytes in use from base; deleted buckets
    +32  buckets  nbuckets x 16 bytes: hash u32 | entry u32 | klen u16 | pad | vlen u32
                  entry 0: empty, TOMB: deleted; entry is an offset from base
    ...  entries  key | value

A bucket carries the lengths, so a lookup that hits reads one bucket (one unpack) and then
the key and value bytes: the reader's hot path is a handful of C calls (table.py).

A version is written only while it is private to the writer (never published, or
reclaimed after a grace period), so a reader never sees a half-updated one; within a
private copy the writer may change anything in place. Keys hash with CRC32 (zlib, in C),
the same in every process (Python's hash() of bytes is salted per process).
"""

from __future__ import annotations

import struct
import zlib

from fastpath.errors import FastpathError
from fastpath.rcu._lookup import Lookup

VERSION_MAGIC = int.from_bytes(b"FPRCUVER", "little")
POISON_BYTE = 0xDE
POISON_WORD = int.from_bytes(bytes([POISON_BYTE]) * 8, "little")
HEADER = 32
TOMB = 0xFFFFFFFF
MAX_KEY = 0xFFFF
MAX_VALUE = 0xFFFFFFFF
MIN_BUCKETS = 16
MAX_LOAD = 0.7  # used + deleted buckets over nbuckets; linear probing slows past ~0.7

_U64 = struct.Struct("<Q")
_II = struct.Struct("<II")
BUCKET = struct.Struct("<IIHxxI")   # hash, entry, klen, vlen
BUCKET_SIZE = BUCKET.size           # 16
_bucket = BUCKET.unpack_from
_crc32 = zlib.crc32

# The compiled lookup (rcu/_lookup.c) reads versions with this geometry and fixed field
# widths (u32 hash, u32 entry, u16 klen, u32 vlen, little-endian): change BUCKET and the
# assertion below stops the import until _lookup.c follows.
assert BUCKET.format == "<IIHxxI"
NBUCKETS_OFF = 16
C_LAYOUT = (HEADER, NBUCKETS_OFF, BUCKET_SIZE, 0, struct.calcsize("<I"), struct.calcsize("<II"),
            struct.calcsize("<IIHxx"), TOMB)   # header, nbuckets, stride, hash, entry, klen, vlen, tomb


class TableFull(FastpathError):
    """The table does not fit in one version buffer."""


class TornRead(FastpathError):
    """A reader found bytes that are not a published version: an RCU violation."""


def key_hash(key: bytes) -> int:
    return _crc32(key)


def entry_size(key: bytes, value: bytes) -> int:
    return len(key) + len(value)


def buckets_for(count: int) -> int:
    n = MIN_BUCKETS
    while n * MAX_LOAD < count + 1:
        n *= 2
    return n


def needed(items: dict[bytes, bytes]) -> int:
    """Bytes a freshly built version of `items` takes."""
    return HEADER + BUCKET_SIZE * buckets_for(len(items)) + sum(entry_size(k, v) for k, v in items.items())


def check_item(key: bytes, value: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
        raise TypeError("SharedTable keys and values are bytes")
    if not key or len(key) > MAX_KEY:
        raise ValueError(f"key of {len(key)} bytes: keys are 1..{MAX_KEY} bytes")
    if len(value) > MAX_VALUE:
        raise ValueError(f"value of {len(value)} bytes: values are at most {MAX_VALUE} bytes")


def build(buf, base: int, size: int, items: dict[bytes, bytes], gen: int) -> int:
    """Write a fresh version of `items` at `base`; returns the bytes used."""
    nb = buckets_for(len(items))
    need = needed(items)
    if need > size:
        raise TableFull(f"{len(items)} entries need {need} bytes, a version holds {size}",
                        hint="create the table with a larger capacity")
    end = HEADER + BUCKET_SIZE * nb
    buf[base + HEADER:base + end] = bytes(BUCKET_SIZE * nb)
    mask = nb - 1
    b = base + HEADER
    for k, v in items.items():
        h = _crc32(k)
        i = h & mask
        while _bucket(buf, b + BUCKET_SIZE * i)[1]:
            i = (i + 1) & mask
        BUCKET.pack_into(buf, b + BUCKET_SIZE * i, h, end, len(k), len(v))
        end = _put_entry(buf, base, end, k, v)
    _U64.pack_into(buf, base + 8, gen)
    _II.pack_into(buf, base + NBUCKETS_OFF, nb, len(items))
    _II.pack_into(buf, base + 24, end, 0)
    _U64.pack_into(buf, base, VERSION_MAGIC)
    return end


def _put_entry(buf, base: int, end: int, k: bytes, v: bytes) -> int:
    p = base + end
    buf[p:p + len(k)] = k
    buf[p + len(k):p + len(k) + len(v)] = v
    return end + len(k) + len(v)


def used(buf, base: int) -> int:
    return _II.unpack_from(buf, base + 24)[0]


def nbuckets(buf, base: int) -> int:
    return _II.unpack_from(buf, base + NBUCKETS_OFF)[0]


def copy(buf, src: int, dst: int) -> None:
    """Copy the used part of the version at `src` to the private buffer at `dst`."""
    n = used(buf, src)
    buf[dst:dst + n] = buf[src:src + n]


def apply(buf, base: int, size: int, puts: dict[bytes, bytes], deletes, gen: int) -> bool:
    """Change the private version at `base` in place; False when it needs a rebuild
    (out of space, or too many used + deleted buckets), in which case it is left invalid."""
    nb, count = _II.unpack_from(buf, base + NBUCKETS_OFF)
    end, tombs = _II.unpack_from(buf, base + 24)
    mask = nb - 1
    b = base + HEADER
    for k in deletes:
        i, found, _ = _probe(buf, base, mask, k)
        if found:
            BUCKET.pack_into(buf, b + BUCKET_SIZE * i, 0, TOMB, 0, 0)
            count -= 1
            tombs += 1
    for k, v in puts.items():
        i, found, free = _probe(buf, base, mask, k)
        if found:
            eh, eo, kl, vl = _bucket(buf, b + BUCKET_SIZE * i)
            if vl == len(v):  # same length: overwrite the value where it is
                p = base + eo + kl
                buf[p:p + vl] = v
                continue
            slot = i
        else:
            if (count + tombs + 1) > nb * MAX_LOAD:
                return False
            slot = free
        if end + entry_size(k, v) > size:
            return False
        eo = _bucket(buf, b + BUCKET_SIZE * slot)[1]
        if not found:
            count += 1
            if eo == TOMB:
                tombs -= 1
        BUCKET.pack_into(buf, b + BUCKET_SIZE * slot, _crc32(k), end, len(k), len(v))
        end = _put_entry(buf, base, end, k, v)
    _U64.pack_into(buf, base + 8, gen)
    _II.pack_into(buf, base + NBUCKETS_OFF, nb, count)
    _II.pack_into(buf, base + 24, end, tombs)
    return True


def _probe(buf, base: int, mask: int, key: bytes) -> tuple[int, bool, int]:
    """(bucket, found, first free bucket) for `key`; the free bucket is the first deleted
    one on the probe path, else the empty one that ended it."""
    h = _crc32(key)
    i = h & mask
    free = -1
    b = base + HEADER
    while True:
        eh, eo, kl, _ = _bucket(buf, b + BUCKET_SIZE * i)
        if eo == 0:
            return i, False, (i if free < 0 else free)
        if eo == TOMB:
            if free < 0:
                free = i
        elif eh == h and buf[base + eo:base + eo + kl] == key:
            return i, True, free
        i = (i + 1) & mask


def lookup(buf, base: int, key: bytes, size: int):
    """The value of `key` in the version at `base` as a memoryview slice, or None.

    Offsets are bounds-checked against the version size, so reading a reclaimed (poisoned)
    buffer raises TornRead instead of returning bytes from elsewhere in the region.
    The reference implementation: SharedTable runs the same algorithm compiled
    (rcu/_lookup.c, through c_lookup()); tests/rcu/test_lookup.py checks they agree.
    """
    nb, _ = _II.unpack_from(buf, base + NBUCKETS_OFF)
    if nb & (nb - 1) or HEADER + BUCKET_SIZE * nb > size:
        raise TornRead(f"version at {base}: bad bucket count {nb:#x}")
    h = _crc32(key)
    mask = nb - 1
    i = h & mask
    b = base + HEADER
    while True:
        eh, eo, kl, vl = _bucket(buf, b + BUCKET_SIZE * i)
        if eo == 0:
            return None
        if eh == h and eo != TOMB:
            if eo + kl + vl > size:
                raise TornRead(f"version at {base}: entry at {eo:#x} overruns the version")
            p = base + eo
            if buf[p:p + kl] == key:
                return buf[p + kl:p + kl + vl]
        i = (i + 1) & mask


def c_lookup(buf, current_off: int, versions_off: int, nversions: int, size: int):
    """The compiled lookup over `nversions` versions of `size` bytes from `versions_off`,
    CURRENT at `current_off`: .lookup(key), .lookup_at(base, key), .release()."""
    return Lookup(buf, current_off, versions_off, nversions, size, C_LAYOUT, TornRead)


def items(buf, base: int, size: int) -> dict[bytes, bytes]:
    """Every entry of the version at `base` (for tests, dumps and the writer's checks)."""
    nb, _ = _II.unpack_from(buf, base + NBUCKETS_OFF)
    if nb & (nb - 1) or HEADER + BUCKET_SIZE * nb > size:
        raise TornRead(f"version at {base}: bad bucket count {nb:#x}")
    out = {}
    for i in range(nb):
        eh, eo, kl, vl = _bucket(buf, base + HEADER + BUCKET_SIZE * i)
        if eo in (0, TOMB):
            continue
        if eo + kl + vl > size:
            raise TornRead(f"version at {base}: entry at {eo:#x} overruns the version")
        p = base + eo
        out[bytes(buf[p:p + kl])] = bytes(buf[p + kl:p + kl + vl])
    return out


def magic(buf, base: int) -> int:
    return _U64.unpack_from(buf, base)[0]


def gen(buf, base: int) -> int:
    return _U64.unpack_from(buf, base + 8)[0]


_POISON_CACHE: dict[int, bytes] = {}


def poison(buf, base: int, size: int) -> None:
    """Overwrite a reclaimed version so that any reader still using it fails loudly."""
    fill = _POISON_CACHE.get(size)
    if fill is None:
        fill = _POISON_CACHE[size] = bytes([POISON_BYTE]) * size
    buf[base:base + size] = fill
