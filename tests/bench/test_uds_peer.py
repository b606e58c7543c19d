"""The UDS row of bench accel: uds_peer.c builds with the node's compiler and measures a
real AF_UNIX ping-pong and bulk stream between two pinned processes."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

from fastpath.bench.accel import Bench, build_uds_peer
from fastpath.bench.harness import cpus
from tests.conftest import require


def test_uds_peer_measures_a_real_stream(tmp_path):
    require(any(shutil.which(c) for c in ("cc", "gcc", "clang")), "no C compiler")
    b = Bench(SimpleNamespace(seconds=1, quick=True), build_uds_peer(str(tmp_path)), str(tmp_path))
    cs = cpus()
    lat = b.uds_latency((cs[-1], cs[-1]))
    gbit = b.uds_bulk((cs[0], cs[-1]))
    assert 0.1 < lat < 10_000, lat          # microseconds, half a round trip
    assert gbit > 0.05, gbit
    out = b._uds((cs[0], cs[-1]), ["pingpong", "4096", "1"]).split()
    assert int(out[2]) > 100 and float(out[1]) >= float(out[0])   # n round trips; p99 >= p50
    assert not list(tmp_path.glob("*.sock")), "the server left its socket behind"
