import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_short_torture():
    """The torture test, short form: loopback in two pods and pod-to-pod, both directions,
    1 B..4 MiB messages, accel toggled mid-stream, resets and closes under load."""
    from fastpath.sockredir import torture
    rep = torture.run(seconds=14, connections=16, budget=8 << 20, seed=None,
                      toggle_every=(0.7, 1.5), grace=20)
    d = rep.to_dict()
    assert rep.worker_error is None, (rep.seed, rep.worker_error)
    assert rep.failures == [], (rep.seed, rep.failures[:20])
    assert d["total_connections"] >= 100 and d["toggles"] >= 4
    for kind in torture.KINDS:
        k = d["by_kind"][kind]
        assert k["accelerated"] >= 5 and k["clean"] >= 5 and k["aborted"] >= 1, (kind, k)
    assert rep.counters["redirected_bytes"] > 50 << 20
