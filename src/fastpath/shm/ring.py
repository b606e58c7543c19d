"""Ring bookkeeping of a Channel: where things live in the region, and what the counters allow.

Pure arithmetic, no I/O; `fastpath.shm.channel` does the atomics and the waiting.

The region is one control page, then `slots` slots of `stride` bytes each:

    control page (4096 bytes), one 64-byte cache line per word that a side writes, so that
    the producer's and the consumer's stores never share a line (false sharing costs a
    cross-CPU cache miss on every message):
        0    magic      b"FPRING01"
        8    slots      slot count
        16   capacity   payload bytes per slot
        24   stride     bytes from one slot to the next
        64   head       messages committed so far (written by the producer only)
        128  tail       messages released so far (written by the consumer only)
        192  consumer_waiting   1 while the consumer is about to block on the data eventfd
        256  producer_waiting   1 while the producer is about to block on the space eventfd
        320  producer_closed    1 once the producer closed cleanly (no more messages)
        384  consumer_closed    1 once the consumer closed cleanly (no more releases)
    slot i at 4096 + i * stride:
        0    length     payload bytes of the message in this slot
        64   payload    `capacity` bytes (64-byte aligned; page aligned when stride is)

head and tail are free-running 64-bit counters (2**64 messages never wrap in practice);
message n lives in slot n % slots. The ring is empty when head == tail and full when
head - tail == slots. Anything else (tail > head, head - tail > slots, a length above the
capacity) means a peer wrote garbage into shared memory: the reader refuses it rather than
reading out of bounds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = int.from_bytes(b"FPRING01", "little")
CONTROL_SIZE = 4096
LINE = 64
SLOT_HEADER = 64

OFF_MAGIC = 0
OFF_SLOTS = 8
OFF_CAPACITY = 16
OFF_STRIDE = 24
OFF_HEAD = 64
OFF_TAIL = 128
OFF_CONSUMER_WAITING = 192
OFF_PRODUCER_WAITING = 256
OFF_PRODUCER_CLOSED = 320
OFF_CONSUMER_CLOSED = 384

MAX_SLOTS = 1 << 16
MAX_CAPACITY = 1 << 34  # 16 GiB per slot: a bound to refuse nonsense, not a design limit
PAGE = 4096

_IDENT = struct.Struct("<QQQQ")


class RingError(ValueError):
    """The ring's shared state is impossible: a peer wrote garbage or the layout is wrong."""


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class RingLayout:
    slots: int
    capacity: int

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS:
            raise RingError(f"slot count {self.slots} not in 1..{MAX_SLOTS}")
        if not 1 <= self.capacity <= MAX_CAPACITY:
            raise RingError(f"slot capacity {self.capacity} not in 1..{MAX_CAPACITY}")

    @property
    def stride(self) -> int:
        # Page-aligned slots for large payloads (memcpy runs on whole pages, no slot shares
        # a page with the next); cache-line aligned for small ones, to keep the ring dense.
        raw = SLOT_HEADER + self.capacity
        return _round_up(raw, PAGE) if self.capacity >= PAGE else _round_up(raw, LINE)

    @property
    def size(self) -> int:
        return CONTROL_SIZE + self.slots * self.stride

    def slot_offset(self, seq: int) -> int:
        return CONTROL_SIZE + (seq % self.slots) * self.stride

    def length_offset(self, seq: int) -> int:
        return self.slot_offset(seq)

    def payload_offset(self, seq: int) -> int:
        return self.slot_offset(seq) + SLOT_HEADER

    def identity(self) -> bytes:
        """The first 32 bytes of the control page, written once by the creator."""
        return _IDENT.pack(MAGIC, self.slots, self.capacity, self.stride)

    @classmethod
    def from_identity(cls, data: bytes, region_size: int) -> "RingLayout":
        """Read back and check what the creator wrote; the receiver's own sanity check."""
        magic, slots, capacity, stride = _IDENT.unpack_from(data)
        if magic != MAGIC:
            raise RingError("control page has no ring magic")
        layout = cls(slots, capacity)
        if stride != layout.stride:
            raise RingError(f"stride {stride} does not match {layout.stride} for {capacity}-byte slots")
        if layout.size != region_size:
            raise RingError(f"ring of {slots} x {stride} needs {layout.size} bytes, region has {region_size}")
        return layout


def used(head: int, tail: int, slots: int) -> int:
    """Messages committed and not yet released; refuses impossible counters."""
    n = head - tail
    if n < 0 or n > slots:
        raise RingError(f"ring counters impossible: head {head}, tail {tail}, {slots} slots")
    return n


def free(head: int, tail: int, slots: int) -> int:
    return slots - used(head, tail, slots)


def check_length(length: int, capacity: int) -> int:
    if length > capacity:
        raise RingError(f"message length {length} exceeds slot capacity {capacity}")
    return length
