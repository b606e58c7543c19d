"""`fastpath bench rcu` pieces run (tiny durations; the figures come from the command)."""

from fastpath.bench import rcu
from fastpath.bench.harness import BenchResult


def test_bench_pieces_run_and_plot(tmp_path):
    s = rcu._Setup(200)
    try:
        for mode in ("rcu", "mplock", "flock"):
            got = rcu._throughput(s, mode, 2, 0.1)
            assert len(got) == 2 and all(r["lookups"] > 0 for r in got)
        lat = rcu._throughput(s, "rcu", 1, 0.1, hz=0, latency=True)[0]
        assert 0 < lat["p50_ns"] <= lat["p99_ns"]
        costs = rcu._breakdown(s, 1, n=2000)
    finally:
        s.close()
    inproc = rcu._inprocess(1, n=3200)
    res = BenchResult("rcu")
    for k, v in {**costs, **inproc}.items():
        res.add_series(k, v)
    for m in ("rcu", "mplock", "flock"):
        for n in (1, 2):
            res.add_series(f"{m}_{n}r", [1.0, 2.0])
    for k in ("read_p50_ns_writer_idle", "read_p50_ns_writer_active", "read_p99_ns_writer_idle",
              "read_p99_ns_writer_active", "synchronize_us_1r", "synchronize_us_2r"):
        res.add_series(k, [1.0, 2.0])
    rcu.plot(res, str(tmp_path / "rcu.png"))
    assert (tmp_path / "rcu.png").stat().st_size > 10_000
