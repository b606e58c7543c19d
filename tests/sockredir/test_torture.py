import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_short_torture():
    """The torture test, short form: loopback in two pods and pod-to-pod, both directions,
    1 B..4 MiB messages, accel toggled mid-stream, resets and closes under load."""
    from fastpath.sockredir import streams, torture
    rep = torture.run(seconds=14, connections=16, budget=8 << 20, seed=None,
                      toggle_every=(0.7, 1.5), grace=20)
    d = rep.to_dict()
    assert rep.worker_error is None, (rep.seed, rep.worker_error)
    assert rep.failures == [], (rep.seed, rep.failures[:20])
    assert d["total_connections"] >= 100 and d["toggles"] >= 4
    for kind in streams.KINDS:
        k = d["by_kind"][kind]
        assert k["accelerated"] >= 5 and k["clean"] >= 5 and k["aborted"] >= 1, (kind, k)
    assert rep.counters["redirected_bytes"] > 50 << 20


def test_brief_torture_for_slow_machines():
    """The same torture, sized for a TCG guest (50-70x slower than the host): the bar is
    zero lost, reordered or corrupted bytes in every kind of connection, not a volume."""
    from fastpath.sockredir import torture
    rep = torture.run(seconds=6, connections=4, max_size=256 << 10, budget=1 << 20,
                      seed=None, toggle_every=(1.0, 2.0), grace=120)
    d = rep.to_dict()
    assert rep.worker_error is None, (rep.seed, rep.worker_error)
    assert rep.failures == [], (rep.seed, rep.failures[:20])
    assert d["total_connections"] >= 4 and d["toggles"] >= 1
    assert rep.counters["redirected_bytes"] > 0
