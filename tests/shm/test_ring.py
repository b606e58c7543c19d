import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpath.shm import ring


def test_layout_alignment_and_size():
    small = ring.RingLayout(8, 64)
    assert small.stride == 128 and small.size == 4096 + 8 * 128
    big = ring.RingLayout(2, 1 << 20)
    assert big.stride % 4096 == 0 and big.stride >= (1 << 20) + 64
    assert big.payload_offset(0) % 64 == 0
    # each word one side writes sits on its own cache line
    offs = [ring.OFF_HEAD, ring.OFF_TAIL, ring.OFF_CONSUMER_WAITING, ring.OFF_PRODUCER_WAITING,
            ring.OFF_PRODUCER_CLOSED, ring.OFF_CONSUMER_CLOSED]
    assert len({o // 64 for o in offs}) == len(offs)


def test_slots_wrap_by_sequence():
    lay = ring.RingLayout(4, 100)
    assert lay.slot_offset(0) == lay.slot_offset(4) == ring.CONTROL_SIZE
    assert lay.slot_offset(5) == ring.CONTROL_SIZE + lay.stride
    assert lay.payload_offset(3) + lay.capacity <= lay.size


def test_identity_round_trip_and_mismatch():
    lay = ring.RingLayout(16, 4096)
    assert ring.RingLayout.from_identity(lay.identity(), lay.size) == lay
    with pytest.raises(ring.RingError, match="needs"):
        ring.RingLayout.from_identity(lay.identity(), lay.size - 4096)
    with pytest.raises(ring.RingError, match="magic"):
        ring.RingLayout.from_identity(bytes(32), lay.size)


@pytest.mark.parametrize("slots, cap", [(0, 64), (8, 0), (ring.MAX_SLOTS + 1, 64)])
def test_bad_shapes_refused(slots, cap):
    with pytest.raises(ring.RingError):
        ring.RingLayout(slots, cap)


def test_counters():
    assert ring.used(10, 7, 4) == 3 and ring.free(10, 7, 4) == 1
    assert ring.free(7, 7, 4) == 4 and ring.free(11, 7, 4) == 0
    with pytest.raises(ring.RingError, match="impossible"):
        ring.used(12, 7, 4)   # more committed than slots: a peer wrote garbage
    with pytest.raises(ring.RingError, match="impossible"):
        ring.used(6, 7, 4)    # released more than committed
    assert ring.check_length(64, 64) == 64
    with pytest.raises(ring.RingError):
        ring.check_length(65, 64)


@given(st.integers(1, 16), st.lists(st.booleans(), max_size=200))
def test_spsc_bookkeeping_never_overlaps(slots, ops):
    """Random produce/consume steps: a slot on loan is never one the consumer holds, and
    messages come out in order."""
    lay = ring.RingLayout(slots, 8)
    head = tail = 0
    contents = {}
    for produce in ops:
        if produce and ring.free(head, tail, slots):
            off = lay.slot_offset(head)
            assert off not in contents
            contents[off] = head
            head += 1
        elif not produce and ring.used(head, tail, slots):
            assert contents.pop(lay.slot_offset(tail)) == tail
            tail += 1
    assert ring.used(head, tail, slots) == len(contents)
