"""The loaned-sample transport of `fastpath bench shm`: a round trip moves ownership of a
slot, not its bytes, so it must work, and carry its sample intact, at any size."""

from __future__ import annotations

import os

from fastpath.bench.shm import Peer


def test_loaned_round_trips_carry_their_sample_at_every_size():
    big = 1 << 20
    p = Peer("channel-loan", big, 0.0001, min(os.sched_getaffinity(0)))
    try:
        payload = memoryview(bytearray(big))
        for size in (64, big):
            samples = p.rtt(payload, size, 50)   # raises if a sample came back changed
            assert len(samples) == 50 and all(s > 0 for s in samples)
            assert p.tput(payload, size, 20) > 0
    finally:
        p.close()
