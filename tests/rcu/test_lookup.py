"""The compiled lookup (rcu/_lookup.c) against the reference, layout.lookup: the same answers
on many tables (inserts, overwrites, deletes, tombstones, rebuilds, republished versions,
colliding buckets), TornRead on poisoned or corrupt versions, never a read out of bounds."""

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.rcu import _lookup, layout

SIZE = 1 << 13
NVER = 3
VOFF = 64          # the versions start after a small header; CURRENT is word 8
CUR = 8
_U64 = struct.Struct("<Q")


class Versions:
    """A writer over a bytearray, as SharedTable does it: copy, apply (or rebuild), publish."""

    def __init__(self) -> None:
        self.buf = bytearray(VOFF + NVER * SIZE + 64)   # 64 guard bytes after the versions
        self.c = layout.c_lookup(self.buf, CUR, VOFF, NVER, SIZE)
        self.data: dict[bytes, bytes] = {}
        self.cur = -1
        self.gen = 0

    def base(self, idx: int) -> int:
        return VOFF + idx * SIZE

    def write(self, puts: dict, deletes, rebuild: bool = False) -> None:
        data = dict(self.data)
        for k in deletes:
            data.pop(k, None)
        data.update(puts)
        nxt = (self.cur + 1) % NVER
        dst = self.base(nxt)
        self.gen += 1
        ok = False
        if self.cur >= 0 and not rebuild:
            layout.copy(self.buf, self.base(self.cur), dst)
            ok = layout.apply(self.buf, dst, SIZE, puts, deletes, self.gen)
        if not ok:
            layout.build(self.buf, dst, SIZE, data, self.gen)
        self.data = data
        self.cur = nxt
        _U64.pack_into(self.buf, CUR, dst)

    def check(self, keys) -> None:
        base = self.base(self.cur)
        for k in keys:
            ref = layout.lookup(self.buf, base, k, SIZE)
            ref = None if ref is None else bytes(ref)
            assert self.c.lookup(k) == ref == self.data.get(k)
            assert self.c.lookup_at(base, k) == ref
        # The older versions stay readable and agree too (a snapshot taken before publishing).
        for idx in range(NVER):
            if idx != self.cur and layout.magic(self.buf, self.base(idx)) == layout.VERSION_MAGIC:
                for k in keys:
                    ref = layout.lookup(self.buf, self.base(idx), k, SIZE)
                    assert self.c.lookup_at(self.base(idx), k) == (None if ref is None else bytes(ref))


@given(st.binary(max_size=300))
def test_crc32_is_zlibs(data):
    assert _lookup.crc32(data) == zlib.crc32(data)


def test_empty_region_looks_up_nothing():
    v = Versions()
    assert v.c.lookup(b"k") is None and v.c.current() == 0


# Few short keys over few buckets: long probe chains, collisions, deleted buckets reused.
_keys = st.binary(min_size=1, max_size=6).filter(lambda k: k[:1] != b"\xff")
_ops = st.lists(st.tuples(
    st.sampled_from(["put", "delete", "batch", "republish"]),
    st.lists(_keys, min_size=1, max_size=6),
    st.binary(max_size=40)), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_c_and_python_agree_on_every_version(ops):
    v = Versions()
    seen: set[bytes] = {b"\xffmissing", b"\xff"}
    for op, keys, value in ops:
        seen.update(keys)
        if op == "put":
            v.write({keys[0]: value}, ())
        elif op == "delete":
            v.write({}, keys)
        elif op == "batch":
            v.write({k: value + k for k in keys[1:]}, keys[:1])
        else:
            v.write({keys[0]: value}, keys[1:], rebuild=True)
        v.check(seen)


def test_many_random_tables_with_tombstones():
    rnd = random.Random(8)
    tombs = 0
    for _ in range(30):
        v = Versions()
        pool = [rnd.randbytes(rnd.randint(1, 12)) for _ in range(rnd.randint(5, 200))]
        for _ in range(rnd.randint(1, 40)):
            puts = {k: rnd.randbytes(rnd.choice((0, 3, 17, 90))) for k in rnd.sample(pool, rnd.randint(0, 5))}
            dels = rnd.sample(pool, rnd.randint(0, 8))
            try:
                v.write(puts, dels, rebuild=rnd.random() < 0.1)
            except layout.TableFull:
                v.write({}, list(v.data), rebuild=True)
        base = v.base(v.cur)
        tombs += struct.unpack_from("<I", v.buf, base + 28)[0]
        v.check(pool + [b"absent"])
    assert tombs > 0   # deleted buckets were on the probe paths checked


def test_a_bucket_whose_hash_matches_but_key_differs():
    """Same hash, different key bytes (a CRC collision): compare the key, keep probing."""
    v = Versions()
    v.write({b"alpha": b"1", b"beta": b"2"}, ())
    base = v.base(v.cur)
    nb = layout.nbuckets(v.buf, base)
    h = zlib.crc32(b"alpha")
    for i in range(nb):   # make beta's bucket carry alpha's hash
        off = base + layout.HEADER + layout.BUCKET_SIZE * i
        eh, eo, kl, vl = layout.BUCKET.unpack_from(v.buf, off)
        if eo and bytes(v.buf[base + eo:base + eo + kl]) == b"beta":
            layout.BUCKET.pack_into(v.buf, off, h, eo, kl, vl)
    for k in (b"alpha", b"beta", b"gamma"):
        ref = layout.lookup(v.buf, base, k, SIZE)
        assert v.c.lookup(k) == (None if ref is None else bytes(ref))
    assert v.c.lookup(b"alpha") == b"1"


def test_keys_of_any_buffer_type():
    v = Versions()
    v.write({b"key": b"val"}, ())
    assert v.c.lookup(bytearray(b"key")) == v.c.lookup(memoryview(b"key")) == b"val"
    with pytest.raises(TypeError):
        v.c.lookup("key")


def test_poisoned_version_raises_in_both():
    v = Versions()
    v.write({b"k%d" % i: b"v" for i in range(20)}, ())
    base = v.base(v.cur)
    layout.poison(v.buf, base, SIZE)
    with pytest.raises(layout.TornRead):
        v.c.lookup(b"k1")
    with pytest.raises(layout.TornRead):
        v.c.lookup_at(base, b"k1")
    with pytest.raises(layout.TornRead):
        layout.lookup(v.buf, base, b"k1", SIZE)


def test_current_outside_the_versions_raises():
    v = Versions()
    v.write({b"k": b"v"}, ())
    for bad in (VOFF + 8, VOFF + NVER * SIZE, 8, 1 << 62):
        _U64.pack_into(v.buf, CUR, bad)
        with pytest.raises(layout.TornRead):
            v.c.lookup(b"k")
        if bad < 1 << 40:
            with pytest.raises(layout.TornRead):
                v.c.lookup_at(bad, b"k")


def test_entry_overrunning_the_version_raises():
    v = Versions()
    v.write({b"k": b"v"}, ())
    base = v.base(v.cur)
    for i in range(layout.nbuckets(v.buf, base)):
        off = base + layout.HEADER + layout.BUCKET_SIZE * i
        eh, eo, kl, vl = layout.BUCKET.unpack_from(v.buf, off)
        if eo:
            layout.BUCKET.pack_into(v.buf, off, eh, eo, kl, 0xFFFFFFF0)
    with pytest.raises(layout.TornRead, match="overruns"):
        v.c.lookup(b"k")


def test_a_full_table_with_no_empty_bucket_raises_instead_of_spinning():
    v = Versions()
    v.write({b"k": b"v"}, ())
    base = v.base(v.cur)
    for i in range(layout.nbuckets(v.buf, base)):
        off = base + layout.HEADER + layout.BUCKET_SIZE * i
        if layout.BUCKET.unpack_from(v.buf, off)[1] == 0:
            layout.BUCKET.pack_into(v.buf, off, 0, layout.TOMB, 0, 0)
    with pytest.raises(layout.TornRead, match="no empty bucket"):
        v.c.lookup(b"absent")
    assert v.c.lookup(b"k") == b"v"


def test_random_corruption_never_reads_out_of_bounds():
    """Flip bytes of a version: every lookup returns bytes within the version, None, or
    raises TornRead; the process never faults."""
    rnd = random.Random(3)
    for _ in range(300):
        v = Versions()
        v.write({b"k%d" % i: rnd.randbytes(rnd.randint(0, 30)) for i in range(rnd.randint(1, 40))}, ())
        base = v.base(v.cur)
        used = layout.used(v.buf, base)
        for _ in range(rnd.randint(1, 12)):
            v.buf[base + rnd.randrange(used)] = rnd.randrange(256)
        for i in range(45):
            try:
                got = v.c.lookup(b"k%d" % i)
            except layout.TornRead:
                continue
            assert got is None or len(got) <= SIZE


def test_bad_geometry_and_release():
    buf = bytearray(4096)
    with pytest.raises(ValueError):
        layout.c_lookup(buf, 4, 64, 1, 1024)          # misaligned CURRENT
    with pytest.raises(ValueError):
        layout.c_lookup(buf, 8, 64, 4, 1024)          # versions past the end
    from fastpath.rcu._lookup import Lookup
    with pytest.raises(ValueError):
        Lookup(buf, 8, 64, 1, 1024, (32, 30, 16, 0, 4, 8, 12, 0xFFFFFFFF), layout.TornRead)
    c = layout.c_lookup(buf, 8, 64, 1, 1024)
    c.release()
    with pytest.raises(ValueError, match="released"):
        c.lookup(b"k")
    buf.extend(b"x")   # the export is gone: the bytearray may resize again
