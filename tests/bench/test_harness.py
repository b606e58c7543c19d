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
