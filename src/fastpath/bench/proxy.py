"""`fastpath bench proxy`: the node proxy against HAProxy (Debian's, `option splice-auto`),
same backends, same pinning, interleaved in one run.

Layout on a 2-CPU machine: each proxy (fastpath with one worker, HAProxy with one
thread) on CPU 1; the load tool and the backend on CPU 0. Then both again with two
(fastpath `workers 2`, HAProxy `nbthread 2`), free to run on both CPUs, which they share
with the load. Everything on a random 127.x.y.z loopback address.

- bulk: iperf3 (client on CPU 0) -> proxy -> iperf3 server, Gbit/s, and the proxy's CPU
  seconds (utime + stime from /proc/PID/stat of every proxy process) per GB moved.
  fastpath in auto mode against HAProxy; fastpath's splice and copy modes too.
- short connections: wrk, one new connection per request (`Connection: close`), a
  1 KiB POST answered by a 1 KiB body from a small HTTP backend (an HAProxy instance
  that only returns a fixed answer: it is the same backend for both). Connections/s,
  and p99 latency from wrk's distribution.
- the pipe pool alone: PipePool.get + put against pipe2 + F_SETPIPE_SZ + 2 x close.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastpath.bench.harness import BenchResult, interleave, pinned, progress
from fastpath.errors import MissingDependency
from fastpath.proxy.pipepool import PipeCache, PipePool

DESCRIPTION = "node proxy vs HAProxy: bulk (iperf3), short connections (wrk), pipe pool"
PROXY_CPU, LOAD_CPU = 1, 0
ALL_CPUS = (0, 1)


def add_arguments(p) -> None:
    p.add_argument("--seconds", type=float, default=None, help="length of each sample")
    p.add_argument("--conns", type=int, default=16, help="wrk connections")
    p.add_argument("--part", choices=("all", "bulk", "short", "pool"), default="all",
                   help="run one part only")


def _cpu_seconds(pids: list[int]) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime
        except OSError:
            pass
    return total / tck


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise MissingDependency(f"nothing listens on {host}:{port} after {timeout:.0f}s",
                            op="bench proxy")


class Setup:
    """Backends and proxies; every process is ours and is stopped in close()."""

    def __init__(self, work: Path, modes: list[str]) -> None:
        self.work = work
        r = random.Random()
        self.host = f"127.{r.randrange(1, 255)}.{r.randrange(0, 255)}.{r.randrange(1, 255)}"
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, list[int]] = {}
        self.modes = modes
        base = 10000 + r.randrange(0, 200) * 100   # below the ephemeral range (32768-)
        self.iperf_port, self.http_port = base, base + 1
        self.logs: list = []

    def _spawn(self, argv, cpu, name: str, env=None) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")
        self.logs.append(log)
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpu),
                             env=env)
        self.procs.append(p)
        return p

    def start(self) -> None:
        h = self.host
        self._spawn(["iperf3", "-s", "-B", h, "-p", str(self.iperf_port)], LOAD_CPU, "iperf3-server")
        body = "x" * 1024
        (self.work / "backend.cfg").write_text(f"""
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout client 10s
    timeout server 10s
    timeout connect 2s
frontend web
    bind {h}:{self.http_port}
    http-request return status 200 content-type text/plain string "{body}"
""")
        self._spawn(["haproxy", "-db", "-f", str(self.work / "backend.cfg")], LOAD_CPU, "backend")
        _wait_port(h, self.iperf_port)
        _wait_port(h, self.http_port)

        port = self.http_port + 1
        # (name, threads or workers, CPUs): one of each on the proxy CPU, then two of each
        # on both CPUs; fastpath once per mode (the mode is per proxy), the pair in auto
        proxies = [("haproxy", "", 1, PROXY_CPU)] + [
            (f"fastpath-{m}", m, 1, PROXY_CPU) for m in self.modes] + [
            ("haproxy-2t", "", 2, ALL_CPUS), ("fastpath-auto-2w", "auto", 2, ALL_CPUS)]
        for name, mode, n, cpus in proxies:
            lines = []
            for kind, target in (("bulk", self.iperf_port), ("short", self.http_port)):
                self.ports[f"{name}-{kind}"] = port
                if mode:
                    lines += [f"service {kind}", f"    listen {h}:{port}", f"    backend {h}:{target}"]
                else:
                    lines += [f"listen {kind}", f"    bind {h}:{port}", f"    server s1 {h}:{target}"]
                port += 1
            cfg = self.work / f"{name}.cfg"
            if mode:
                cfg.write_text("\n".join(["global", f"    workers {n}", "    pipe-idle 30s"] + lines) + "\n")
                p = self._spawn([sys.executable, "-m", "fastpath", "proxy", "run", "-c", str(cfg),
                                 "--mode", mode, "--name", f"bench-{name}", "--log-level", "warning"],
                                cpus, name)
            else:
                cfg.write_text("\n".join([
                    "global", f"    nbthread {n}", "    maxconn 4000", "defaults", "    mode tcp",
                    "    option splice-auto", "    timeout client 30s", "    timeout server 30s",
                    "    timeout connect 2s"] + lines) + "\n")
                p = self._spawn(["haproxy", "-db", "-f", str(cfg)], cpus, name)
            self.pids[name] = [p.pid]
        for port in self.ports.values():
            _wait_port(h, port)
        for name, mode, n, _ in proxies:
            if not mode:
                continue
            (master,) = self.pids[name]
            deadline = time.monotonic() + 5
            while len(_children(master)) < n and time.monotonic() < deadline:
                time.sleep(0.05)
            self.pids[name] = [master] + _children(master)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.logs:
            f.close()


def _iperf(setup: Setup, port: int, seconds: float, pids: list[int]) -> dict:
    c0 = _cpu_seconds(pids)
    out = subprocess.run(["iperf3", "-c", setup.host, "-p", str(port), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, preexec_fn=pinned(LOAD_CPU),
                         timeout=seconds + 30)
    cpu = _cpu_seconds(pids) - c0
    try:
        end = json.loads(out.stdout)["end"]["sum_received"]
    except (ValueError, KeyError) as e:
        raise MissingDependency(f"iperf3 through port {port} failed: {out.stdout[-300:]}",
                                op="bench proxy bulk") from e
    gb = end["bytes"] / 1e9
    return {"gbps": end["bits_per_second"] / 1e9, "cpu_s_per_gb": cpu / gb if gb else float("inf")}


_LUA = """wrk.method = "POST"
wrk.body = string.rep("r", 1024)
wrk.headers["Connection"] = "close"
wrk.headers["Content-Type"] = "text/plain"
"""


def _wrk(setup: Setup, port: int, seconds: float, conns: int) -> dict:
    script = setup.work / "post1k.lua"
    if not script.exists():
        script.write_text(_LUA)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, int(seconds))}s", "--latency",
                          "-s", str(script), f"http://{setup.host}:{port}/"],
                         capture_output=True, text=True, preexec_fn=pinned(LOAD_CPU),
                         timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.M)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out.stdout)
    if not m or not p99:
        raise MissingDependency(f"wrk through port {port} failed: {out.stdout[-300:]}{out.stderr[-300:]}",
                                op="bench proxy short")
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return {"rps": float(m.group(1)), "p99_ms": float(p99.group(1)) * unit,
            "errors": errs.group(0) if errs else ""}


def _pool_bench(n: int) -> dict:

    pool = PipePool(size=1 << 20, cap=64, idle=0)
    cache = PipeCache(pool)
    first = cache.get()
    assert first is not None, "the kernel refused a pipe"
    cache.put(first)
    get, put = cache.get, cache.put
    t0 = time.perf_counter_ns()
    for _ in range(n):
        put(get())  # type: ignore[arg-type]  # the pool holds one: never None here
    pooled = (time.perf_counter_ns() - t0) / n
    t0 = time.perf_counter_ns()
    for _ in range(n):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.close(r)
        os.close(w)
    fresh = (time.perf_counter_ns() - t0) / n
    cache.close()
    return {"pooled_ns": pooled, "fresh_ns": fresh}


def run(args) -> BenchResult:
    for tool in ("iperf3", "wrk", "haproxy"):
        if not shutil.which(tool):
            raise MissingDependency(f"{tool} is not installed", hint="scripts/install-system-packages.sh")
    quick = args.quick
    seconds = args.seconds or (2.0 if quick else 5.0)
    rounds = args.rounds or (1 if quick else 3)
    modes = ["auto", "splice", "copy"]
    res = BenchResult("proxy", unit="", params={
        "seconds": seconds, "rounds": rounds, "wrk_conns": args.conns, "proxy_cpu": PROXY_CPU,
        "load_cpu": LOAD_CPU, "fastpath_workers": [1, 2], "haproxy_threads": [1, 2],
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0]})
    work = Path(tempfile.mkdtemp(prefix="fp-bench-proxy-"))
    env_instance = os.environ.get("FASTPATH_INSTANCE")
    setup = Setup(work, modes)
    part = args.part
    gbps: dict[str, list[float]] = {}
    rps: dict[str, list[float]] = {}
    bulk: dict[str, list[dict]] = {}
    short: dict[str, list[dict]] = {}
    try:
        if part != "pool":
            setup.start()
        def bulk_of(key: str, pids_key: str):
            def fn():
                r = _iperf(setup, setup.ports[f"{key}-bulk"], seconds, setup.pids[pids_key])
                bulk.setdefault(key, []).append(r)
                return r["gbps"]
            return fn
        contenders = {"haproxy": bulk_of("haproxy", "haproxy")}
        for mode in modes:
            contenders[f"fastpath-{mode}"] = bulk_of(f"fastpath-{mode}", f"fastpath-{mode}")
        for two in ("haproxy-2t", "fastpath-auto-2w"):
            contenders[two] = bulk_of(two, two)
        if part in ("all", "bulk"):
            gbps = interleave(contenders, rounds, what="bulk (iperf3)")

        def short_of(key: str):
            def fn():
                r = _wrk(setup, setup.ports[f"{key}-short"], seconds, args.conns)
                short.setdefault(key, []).append(r)
                return r["rps"]
            return fn
        if part in ("all", "short"):
            rps = interleave({k: short_of(k) for k in ("haproxy", "fastpath-auto", "haproxy-2t",
                                                       "fastpath-auto-2w")}, rounds,
                             what="short connections (wrk)")
    finally:
        setup.close()
        shutil.rmtree(work, ignore_errors=True)
    warm = {k: v[-rounds:] for k, v in bulk.items()}
    # keep the raw per-sample figures next to the summaries
    res.params["raw"] = {"bulk": bulk, "short": short}
    for k, v in gbps.items():
        res.add_series(f"bulk {k} Gbit/s", v, unit="Gbit/s")
        res.add_series(f"bulk {k} CPU s/GB", [x["cpu_s_per_gb"] for x in warm[k]], unit="CPU s/GB")
    for k, v in rps.items():
        res.add_series(f"short {k} conn/s", v, unit="conn/s")
        res.add_series(f"short {k} p99 ms", [x["p99_ms"] for x in short[k][-rounds:]], unit="ms")
        errs = [x["errors"] for x in short[k] if x["errors"]]
        if errs:
            res.notes.append(f"wrk via {k}: {errs[-1]}")
    if part in ("all", "pool"):
        n = 20000 if quick else 100000
        pool = []
        for r in range(rounds):
            progress(f"pipe pool: round {r + 1}/{rounds}")
            pool.append(_pool_bench(n))
        res.add_series("pool get+put ns", [x["pooled_ns"] for x in pool], unit="ns")
        res.add_series("pipe2+setsize+close ns", [x["fresh_ns"] for x in pool], unit="ns")
        r_pool = res.add_ratio("pool/fresh", "pool get+put ns", "pipe2+setsize+close ns")
        res.add_goal("pool get+put / pipe2+close", r_pool, "<=", 0.05)
    if gbps:
        r_bulk = res.add_ratio("bulk fastpath-auto/haproxy", "bulk fastpath-auto Gbit/s",
                               "bulk haproxy Gbit/s")
        r_cpu = res.add_ratio("CPU/GB fastpath-auto/haproxy", "bulk fastpath-auto CPU s/GB",
                              "bulk haproxy CPU s/GB")
        res.add_ratio("bulk splice/copy", "bulk fastpath-splice Gbit/s", "bulk fastpath-copy Gbit/s")
        res.add_ratio("bulk auto/splice", "bulk fastpath-auto Gbit/s", "bulk fastpath-splice Gbit/s")
        res.add_goal("bulk fastpath/haproxy", r_bulk, ">=", 1.0)
        res.add_goal("CPU s per GB fastpath/haproxy", r_cpu, "<=", 1.0)
        r2 = res.add_ratio("bulk fastpath-auto-2w/haproxy-2t", "bulk fastpath-auto-2w Gbit/s",
                           "bulk haproxy-2t Gbit/s")
        c2 = res.add_ratio("CPU/GB fastpath-auto-2w/haproxy-2t", "bulk fastpath-auto-2w CPU s/GB",
                           "bulk haproxy-2t CPU s/GB")
        res.add_goal("bulk 2 workers / nbthread 2", r2, ">=", 1.0)
        res.add_goal("CPU s per GB 2 workers / nbthread 2", c2, "<=", 1.0)
    if rps:
        r_short = res.add_ratio("conn/s fastpath/haproxy", "short fastpath-auto conn/s",
                                "short haproxy conn/s")
        res.add_goal("conn/s fastpath/haproxy", r_short, ">=", 1.0)
        p99 = res.add_ratio("p99 fastpath/haproxy", "short fastpath-auto p99 ms", "short haproxy p99 ms")
        res.add_goal("short p99 fastpath/haproxy", p99, "<=", 1.0)
        r2 = res.add_ratio("conn/s fastpath-auto-2w/haproxy-2t", "short fastpath-auto-2w conn/s",
                           "short haproxy-2t conn/s")
        res.add_goal("conn/s 2 workers / nbthread 2", r2, ">=", 1.0)
    res.notes.append("shared 2-CPU VM with other jobs running: figures are noisy; proxies on "
                     f"CPU {PROXY_CPU}, iperf3/wrk and backends on CPU {LOAD_CPU}; the two-worker "
                     "and two-thread proxies run on both CPUs, shared with the load")
    if env_instance is None:
        res.notes.append("run without FASTPATH_INSTANCE")
    return res


def plot(result: BenchResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.series
    panels = [
        ("bulk throughput (iperf3)", "Gbit/s", [k for k in s if k.endswith("Gbit/s")]),
        ("proxy CPU per GB", "CPU s/GB", [k for k in s if k.endswith("CPU s/GB")]),
        ("short connections (wrk, 1 KiB)", "conn/s", [k for k in s if k.endswith("conn/s")]),
        ("short connections p99", "ms", [k for k in s if k.endswith("p99 ms")]),
        ("pipe pool", "ns per pipe", [k for k in s if k.endswith(" ns")]),
    ]
    panels = [x for x in panels if x[2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    axes = axes[0]
    for ax, (title, unit, keys) in zip(axes, panels):
        med = [s[k]["median"] for k in keys]
        lo = [s[k]["median"] - s[k]["min"] for k in keys]
        hi = [s[k]["max"] - s[k]["median"] for k in keys]
        labels = [k.split(" ")[1] if k.startswith(("bulk", "short")) else k.rsplit(" ", 1)[0]
                  for k in keys]
        colors = ["#c0504d" if "haproxy" in k or "pipe2" in k else "#3b75af" for k in keys]
        ax.bar(range(len(keys)), med, yerr=[lo, hi], capsize=4, color=colors)
        ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
    fig.suptitle("fastpath bench proxy: median, min-max whiskers (red: peer)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
