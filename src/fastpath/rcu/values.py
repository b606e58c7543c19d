"""Self-checking values for the RCU torture (pure): each value carries a CRC32 of its
generation and body, and the key it was written for, so a reader can tell a whole value
from a torn one, a poisoned (reclaimed) one, or one that belongs to another key.
"""

from __future__ import annotations

import random
import struct
import zlib

_VHDR = struct.Struct("<IQ")     # crc32, generation


def make_value(key: bytes, gen: int, rnd: random.Random) -> bytes:
    payload = rnd.randbytes(rnd.choice((0, 5, 24, 100, 300)))
    body = key + b"|" + payload
    g = gen.to_bytes(8, "little")
    return _VHDR.pack(zlib.crc32(g + body), gen) + body


def check_value(key: bytes, value: bytes) -> str | None:
    """None if `value` is a whole, untorn value written for `key`; else what is wrong."""
    if len(value) < _VHDR.size + len(key) + 1:
        return f"key {key!r}: value of {len(value)} bytes is too short"
    crc, gen = _VHDR.unpack_from(value)
    body = value[_VHDR.size:]
    if zlib.crc32(gen.to_bytes(8, "little") + body) != crc:
        return f"key {key!r}: checksum mismatch (gen {gen:#x}, {len(value)} bytes)"
    if body[:len(key) + 1] != key + b"|":
        return f"key {key!r}: value belongs to {body.split(b'|')[0]!r}"
    return None


def key_of(i: int) -> bytes:
    return b"svc-%05d" % i
