import json

from fastpath.bench.harness import BenchResult, default_plot, interleave, percentile, summarize


def test_interleave_alternates_and_skips_warmup():
    order = []
    samples = interleave({"a": lambda: order.append("a") or 1.0,
                          "b": lambda: order.append("b") or [2.0, 3.0]}, rounds=2, warmup=1)
    assert order == ["a", "b"] * 3
    assert samples == {"a": [1.0, 1.0], "b": [2.0, 3.0, 2.0, 3.0]}


def test_summary_and_percentiles():
    s = summarize(range(1, 101))
    assert s["median"] == 50.5 and s["p90"] == 90 and s["p99"] == 99 and s["n"] == 100
    assert percentile([5.0], 99) == 5.0


def test_result_json_and_plot(tmp_path):
    r = BenchResult("demo", unit="us")
    r.add_series("fastpath", [1.0, 2.0, 3.0])
    r.add_series("peer", [2.0, 4.0, 6.0])
    assert r.add_ratio("fastpath/peer", "fastpath", "peer") == 0.5
    assert r.add_goal("fastpath/peer", 0.5, "<=", 1.0)
    r.write_json(str(tmp_path / "r.json"))
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["series"]["peer"]["median"] == 4.0 and d["goals"][0]["met"]
    default_plot(r, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_plain_lines_are_rate_limited_but_every_stage_shows():
    import io

    from fastpath.bench import harness
    out = io.StringIO()
    now = [100.0]
    p = harness.Progress("demo", stream=out, live=False, clock=lambda: now[0])
    p.step("bulk: round 1/3 a")
    p.step("bulk: round 1/3 b")      # same stage, same second: not printed
    now[0] += 1.5
    p.step("bulk: round 2/3 a")      # a second later: printed
    p.step("short: round 1/3 a")     # a new stage: printed at once
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == ["fastpath bench demo: bulk: round 1/3 a (0 s)",
                     "fastpath bench demo: bulk: round 2/3 a (2 s)",
                     "fastpath bench demo: short: round 1/3 a (2 s)",
                     "fastpath bench demo: done in 2 s"]
    assert p.steps == 4


def test_interleave_reports_each_call_to_the_running_bench():
    import io

    from fastpath.bench import harness
    out = io.StringIO()
    harness.start_progress("demo", stream=out, live=False)
    try:
        harness.interleave({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=2, warmup=1, what="x")
        assert harness._progress is not None and harness._progress.steps == 6
    finally:
        harness.stop_progress()
    assert out.getvalue().splitlines()[0] == "fastpath bench demo: x: warm-up a (0 s)"
    assert harness._progress is None
    harness.progress("nothing runs: no output, no error")
