"""What every fastpath benchmark shares: pinning, interleaving, statistics, JSON, plots.

Rules (ARCHITECTURE, "Conventions"): contenders run interleaved (A B A B ...) in one run,
processes pinned to CPUs, repeated, reported as medians with the ratio against the peer.
On this 2-core VM a wakeup across CPUs costs ~45 us, so an unpinned latency is noise.

A benchmark module `fastpath.bench.NAME` provides:
    DESCRIPTION: str
    add_arguments(parser) -> None        # its own flags; --json/--plot/--rounds/--quick are common
    run(args) -> BenchResult
    plot(result, path) -> None           # optional; default: bars of each series' median
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int, pid: int = 0) -> None:
    """Pin `pid` (0: this process) to one CPU."""
    os.sched_setaffinity(pid, {cpu})


def pinned(cpu: int | Iterable[int]) -> Callable[[], None]:
    """A subprocess preexec_fn that pins the child to `cpu` (or a set of CPUs) before it
    execs."""
    cpus = {cpu} if isinstance(cpu, int) else set(cpu)
    return lambda: os.sched_setaffinity(0, cpus)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample list."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def summarize(samples: Iterable[float]) -> dict[str, float]:
    s = [float(x) for x in samples]
    if not s:
        return {"n": 0}
    return {"n": len(s), "median": statistics.median(s), "mean": statistics.fmean(s),
            "p90": percentile(s, 90), "p99": percentile(s, 99), "min": min(s), "max": max(s)}


class Progress:
    """What a bench is measuring and how far it got, on stderr: a live status line on a
    terminal, plain lines otherwise (CI logs, pipes), at most one a second unless the stage
    changes, so a long bench never floods a log. Benches report through `progress()`;
    `interleave` reports every round itself."""

    def __init__(self, bench: str, stream: IO[str] | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bench = bench
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.t0 = clock()
        self.steps = 0
        self._last_print = float("-inf")
        self._last_stage = ""
        self._status = None
        if self.live:
            self._status = Console(file=self.stream).status(f"fastpath bench {bench}: starting")
            self._status.start()

    def step(self, what: str) -> None:
        self.steps += 1
        now = self.clock()
        line = f"fastpath bench {self.bench}: {what} ({now - self.t0:.0f} s)"
        if self._status is not None:
            self._status.update(line)
            return
        stage = what.split(":", 1)[0]
        if stage != self._last_stage or now - self._last_print >= 1.0:
            print(line, file=self.stream, flush=True)
            self._last_print, self._last_stage = now, stage

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        print(f"fastpath bench {self.bench}: done in {self.clock() - self.t0:.0f} s",
              file=self.stream, flush=True)


_progress: Progress | None = None


def start_progress(bench: str, **kw) -> Progress:
    global _progress
    _progress = Progress(bench, **kw)
    return _progress


def stop_progress() -> None:
    global _progress
    if _progress is not None:
        _progress.close()
        _progress = None


def progress(what: str) -> None:
    """Report a step ("stage: detail") of the running bench; nothing when none runs."""
    if _progress is not None:
        _progress.step(what)


def interleave(contenders: Mapping[str, Callable[[], Any]], rounds: int,
               warmup: int = 1, what: str = "") -> dict[str, list[Any]]:
    """Call each contender once per round, in turn (A B A B ...), after `warmup` unrecorded
    rounds. A contender returns one sample or a list of samples (a number, or a tuple of
    figures measured together). `what` names the stage in the progress lines, which name
    the running contender themselves."""
    out: dict[str, list[Any]] = {k: [] for k in contenders}
    stage = what or f"{len(contenders)} contenders"
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            progress(f"{stage}: {'warm-up' if r < warmup else f'round {r - warmup + 1}/{rounds}'}"
                     f" {name}")
            got = fn()
            if r >= warmup:
                out[name].extend(got if isinstance(got, list) else [got])
    return out


@dataclass
class BenchResult:
    """Raw samples per series, their summaries, ratios against the peer, and goals."""

    name: str
    unit: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    goals: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add_series(self, key: str, samples: list[float], unit: str | None = None,
                   **extra: Any) -> dict[str, Any]:
        entry = {"unit": unit or self.unit, "samples": list(samples), **summarize(samples), **extra}
        self.series[key] = entry
        return entry

    def median(self, key: str) -> float:
        return self.series[key]["median"]

    def add_ratio(self, key: str, numerator: str, denominator: str, stat: str = "median") -> float:
        r = self.series[numerator][stat] / self.series[denominator][stat]
        self.ratios[key] = r
        return r

    def add_goal(self, what: str, value: float, op: str, target: float) -> bool:
        met = {"<=": value <= target, ">=": value >= target, "<": value < target,
               ">": value > target}[op]
        self.goals.append({"goal": f"{what} {op} {target}", "value": value, "met": met})
        return met

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.name, "unit": self.unit, "started": self.started,
            "host": {"kernel": platform.release(), "python": platform.python_version(),
                     "cpus": cpus()},
            "params": self.params, "series": self.series, "ratios": self.ratios,
            "goals": self.goals, "notes": self.notes,
        }

    def write_json(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def default_plot(result: BenchResult, path: str) -> None:
    """Bars of each series' median with p90 whiskers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(result.series)
    med = [result.series[k].get("median", 0) for k in keys]
    p90 = [result.series[k].get("p90", 0) for k in keys]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(keys) + 2), 4.5))
    ax.bar(range(len(keys)), med, yerr=[[0] * len(keys), [max(0, b - a) for a, b in zip(med, p90)]],
           capsize=4, color="#3b75af")
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylabel(result.unit or "value")
    ax.set_title(f"fastpath bench {result.name} (median, p90 whisker)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
