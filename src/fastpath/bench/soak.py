"""`fastpath bench soak`: the demo cluster with node proxies and accel, left to run for
minutes of mixed idle and churn, as an operator's first hour would: nothing dies, no change
is missed, and memory and fds stay flat.

Each cycle: an idle stretch longer than the RCU table's stall bound (the agents once died
of an idle proxy), then churn: services added and deleted (more publishes than the
service table has version buffers), pods added and deleted through their node's agent,
each change waited for on every node, and a pod reaching each new VIP through its node
proxy (with accel: from inside the accel cgroup, as `fastpath exec` runs it). Every third
cycle one agent is killed with SIGKILL; its supervisor brings it back, and `fastpath
check` must pass meanwhile.

Measured: programming latency of every change (until every node's agent reports it),
RSS and open fds of every agent, supervisor, BIRD, proxy master and worker, sampled
every SAMPLE_S, and the counts that must stay zero: processes that died unasked, changes
missed (not on every node within MISS_AFTER), probes and checks that failed. There is no
peer: the goals are absolute (nothing lost, growth within noise).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

from fastpath.agent import demo
from fastpath.bench.harness import BenchResult, progress
from fastpath.cleanup import sweep_all
from fastpath.cluster.objects import Service
from fastpath.cluster.store import ClusterStore
from fastpath.podnet import cluster as cl
from fastpath.podnet.build import Builder

DESCRIPTION = ("soak: the demo with node proxies and accel for minutes of idle and churn "
               "(services, pods, an agent kill); deaths, misses, programming latency, RSS and "
               "fds over time")
SAMPLE_S = 5.0
MISS_AFTER = 5.0       # seconds until a change not on every node counts as missed
IDLE_S = (8.0, 20.0)   # each cycle's idle stretch: longer than the 2 s stall bound
KILL_EVERY = 3         # cycles between agent kills
WARMUP_S = 30.0        # memory samples before this are not the baseline


def add_arguments(p) -> None:
    p.add_argument("--seconds", type=float, default=600.0, help="how long to soak (default 600)")
    p.add_argument("--nodes", type=int, default=3, help="demo nodes (default 3)")
    p.add_argument("--datastore", default="sqlite", help="sqlite (default) or etcd")
    p.add_argument("--tor", action="store_true", help="a top-of-rack router (FRR) as in up --tor")
    p.add_argument("--no-accel", action="store_true", help="without socket redirect")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")


def _fastpath(*argv: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastpath", *argv], capture_output=True, text=True,
                          timeout=timeout)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def processes(c) -> dict[str, int]:
    """(kind node) -> pid of every long-lived process of the demo's nodes."""
    out: dict[str, int] = {}
    r = demo.AgentRouting()
    for n in c.nodes:
        for kind, pid in (("supervisor", demo.supervisor_pid(n.name)), ("agent", demo.agent_pid(n.name)),
                          ("bird", r._bird_pid(n.name))):
            if pid:
                out[f"{kind} {n.name}"] = pid
        master = (demo.read_node_status(n.name) or {}).get("proxy_pid")
        if master and os.path.exists(f"/proc/{master}"):
            out[f"proxy master {n.name}"] = master
            for i, w in enumerate(_children(master)):
                out[f"proxy worker{i} {n.name}"] = w
    return out


class Soak:
    def __init__(self, c, rnd: random.Random) -> None:
        self.c = c
        self.rnd = rnd
        self.nodes = [n.name for n in c.nodes]
        self.t0 = time.monotonic()
        self.latency: list[float] = []
        self.misses: list[str] = []
        self.failed_probes: list[str] = []
        self.failed_checks: list[str] = []
        self.deaths: list[str] = []
        self.kills = 0
        self.changes = 0
        self.samples: dict[str, list[tuple[float, int, int, int]]] = {}   # key -> (t, pid, rss, fds)
        self.known = processes(c)
        self.killed: set[int] = set()
        self.next_sample = 0.0
        self.serial = 0

    # ---- observation

    def sample(self, force: bool = False) -> None:
        now = time.monotonic() - self.t0
        if not force and now < self.next_sample:
            return
        self.next_sample = now + SAMPLE_S
        current = processes(self.c)
        for key, pid in self.known.items():
            # workers are replaced by design (a new generation per listener change): theirs
            # are counted from the masters' logs (worker_deaths)
            if key.startswith("proxy worker"):
                continue
            if current.get(key) != pid and pid not in self.killed and not os.path.exists(f"/proc/{pid}"):
                self.deaths.append(f"{key} (pid {pid}) at {now:.0f}s")
        self.known = current
        for key, pid in current.items():
            rss, fds = _rss_kb(pid), _fds(pid)
            if rss is not None and fds is not None:
                self.samples.setdefault(key, []).append((now, pid, rss, fds))

    def wait_everywhere(self, what: str, pred, t_write: float) -> None:
        pending = set(self.nodes)
        deadline = time.monotonic() + MISS_AFTER
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                if pred(demo.read_node_status(n) or {}):
                    pending.discard(n)
            time.sleep(0.005)
        if pending:
            self.misses.append(f"{what}: not on {sorted(pending)} after {MISS_AFTER:g}s")
        else:
            self.latency.append(time.time() - t_write)
        self.changes += 1

    def probe(self, vip: str) -> None:
        pod = self.rnd.choice(self.c.pods)
        code = ("import socket; s=socket.create_connection(('%s', 80), 3); s.sendall(b'hi\\n'); "
                "d=s.recv(100); assert d.startswith(b'node'), d" % vip)
        p = _fastpath("exec", pod.name, "--", sys.executable, "-c", code, timeout=30)
        if p.returncode != 0:
            self.failed_probes.append(f"{pod.name} -> {vip}: {p.stderr.strip()[-200:]}")

    def check(self, why: str) -> None:
        p = _fastpath("check", "--json", timeout=120)
        try:
            ok = json.loads(p.stdout)["ok"]
        except (ValueError, KeyError):
            ok = False
        if not ok:
            self.failed_checks.append(f"{why} at {time.monotonic() - self.t0:.0f}s")

    # ---- the churn

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    def churn(self) -> None:
        live: list[str] = []
        with ClusterStore.open() as cs:
            for _ in range(self.rnd.randint(4, 7)):   # > the table's 4 version buffers
                self.serial += 1
                name = f"soak{self.serial}"
                vip = f"10.96.{5 + self.serial // 250}.{self.serial % 250 + 1}"
                t = time.time()
                cs.put_service(Service(name=name, listen=f"{vip}:80", pods="", port=8080, stamp=t))
                self.wait_everywhere(f"service add {name}", lambda st, n=name: n in st.get("services", {}), t)
                live.append(vip)
                self.probe(vip)
                self.sample()
        with Builder() as b:
            for _ in range(self.rnd.randint(2, 4)):
                self.serial += 1
                node = self.rnd.choice(self.nodes)
                t = time.time()
                p = b.add_pod(node, f"soak{self.serial}")
                self.wait_everywhere(f"pod add {p.name}", lambda st, ip=p.ip: any(
                    f"{ip}:8080" in s["backends"] for s in st.get("services", {}).values()), t)
                t = time.time()
                b.del_pod(p.name)
                self.wait_everywhere(f"pod del {p.name}", lambda st, ip=p.ip: not any(
                    f"{ip}:8080" in s["backends"] for s in st.get("services", {}).values()), t)
        with ClusterStore.open() as cs:
            for name in [s for s in cs.view().services if s.startswith("soak")]:
                t = time.time()
                cs.del_service(name)
                self.wait_everywhere(f"service del {name}",
                                     lambda st, n=name: n not in st.get("services", {}), t)

    def kill_an_agent(self) -> None:
        node = self.rnd.choice(self.nodes)
        pid = demo.agent_pid(node)
        if not pid:
            self.deaths.append(f"agent {node}: not running before the kill")
            return
        self.killed.add(pid)
        os.kill(pid, 9)
        self.kills += 1
        self.check(f"check after killing agent {node}")
        try:
            demo.AgentRouting().wait_restarted(self.c, node, pid, 60.0)
        except Exception as e:  # noqa: BLE001 - recorded as a death, the soak goes on
            self.deaths.append(f"agent {node}: not back after the kill ({e})")


def worker_deaths(c) -> list[str]:
    """Workers a node proxy's master saw exit unasked, or killed as hung (its log)."""
    out = []
    for n in c.nodes:
        log = demo.node_state_dir(n.name) / f"proxy-{n.name}.log"
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            continue
        out += [f"{n.name}: {line.strip()}" for line in text.splitlines()
                if "exited with status" in line or "hung; killing" in line]
    return out


def tracebacks(c) -> list[str]:
    """The last line of every traceback in the node agents' logs (a failed step is logged
    with one; none is expected in a soak)."""
    out = []
    for n in c.nodes:
        try:
            lines = (demo.node_state_dir(n.name) / "agent.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                end = next((x for x in lines[i + 1:] if x and not x.startswith(" ")), "?")
                out.append(f"{n.name}: {end.strip()[:200]}")
    return out


def _growth(samples: list[tuple[float, int, int, int]]) -> tuple[float, float] | None:
    """(RSS growth KB, fd growth) of the longest-lived pid over the second half of its
    life: a leak grows with the churn, which goes on throughout, while what a process
    opens once (an agent's node state on its first CNI request, its service table) is
    open by then. None without two such samples."""
    by_pid: dict[int, list[tuple[float, int, int, int]]] = {}
    for s in samples:
        by_pid.setdefault(s[1], []).append(s)
    best = max(by_pid.values(), key=lambda v: v[-1][0] - v[0][0])
    middle = (best[0][0] + best[-1][0]) / 2
    late = [s for s in best if s[0] >= max(middle, best[0][0] + WARMUP_S)]
    if len(late) < 2:
        return None
    return late[-1][2] - late[0][2], late[-1][3] - late[0][3]


def run(args) -> BenchResult:
    seconds = 60.0 if args.quick else args.seconds
    seed = args.seed if args.seed is not None else int(time.time())
    rnd = random.Random(seed)
    up = ["up", "--nodes", str(args.nodes), "--pods", "2", "--proxy"]
    if args.datastore != "sqlite":
        up += ["--datastore", args.datastore]
    if args.tor:
        up.append("--tor")
    if not args.no_accel:
        up.append("--accel")
    res = BenchResult("soak", unit="s", params={"seconds": seconds, "seed": seed, "up": " ".join(up),
                                                "sample_s": SAMPLE_S, "miss_after_s": MISS_AFTER,
                                                "idle_s": list(IDLE_S), "kill_every": KILL_EVERY})
    progress("fastpath " + " ".join(up))
    p = _fastpath(*up)
    try:
        if p.returncode != 0:
            raise RuntimeError(f"fastpath up failed: {p.stderr.strip()[-400:]}")
        c = cl.require()
        soak = Soak(c, rnd)
        soak.sample(force=True)
        cycle = 0
        while time.monotonic() - soak.t0 < seconds:
            cycle += 1
            progress(f"cycle {cycle}: {time.monotonic() - soak.t0:.0f}/{seconds:.0f}s, "
                     f"{soak.changes} changes, {len(soak.misses)} missed, {len(soak.deaths)} deaths")
            soak.idle(rnd.uniform(*IDLE_S))
            soak.churn()
            if cycle % KILL_EVERY == 0:
                soak.kill_an_agent()
            soak.check(f"check after cycle {cycle}")
        soak.sample(force=True)
        soak.deaths += worker_deaths(c)
        errors = tracebacks(c)
    finally:
        progress("fastpath down")
        sweep_all()
    res.add_series("programming latency", soak.latency, unit="s")
    rss_growth, fd_growth = {}, {}
    for key, s in sorted(soak.samples.items()):
        res.add_series(f"rss {key}", [x[2] / 1024 for x in s], unit="MB",
                       t=[round(x[0], 1) for x in s], pids=[x[1] for x in s])
        res.add_series(f"fds {key}", [x[3] for x in s], unit="fds", t=[round(x[0], 1) for x in s])
        g = _growth(s)
        if g is not None:
            rss_growth[key], fd_growth[key] = g[0] / 1024, g[1]
    res.params.update({"changes": soak.changes, "agent_kills": soak.kills, "cycles": cycle,
                       "rss_growth_mb": rss_growth, "fd_growth": fd_growth,
                       "misses": soak.misses, "deaths": soak.deaths,
                       "failed_probes": soak.failed_probes, "failed_checks": soak.failed_checks,
                       "agent_tracebacks": errors})
    res.add_goal("processes that died unasked", len(soak.deaths), "<=", 0)
    res.add_goal("changes missed", len(soak.misses), "<=", 0)
    res.add_goal("probes through a new VIP that failed", len(soak.failed_probes), "<=", 0)
    res.add_goal("fastpath check runs that failed", len(soak.failed_checks), "<=", 0)
    res.add_goal("tracebacks in the agents' logs", len(errors), "<=", 0)
    res.add_goal("programming p99 (s)", res.series["programming latency"].get("p99", 0.0), "<=", 1.0)
    res.add_goal("worst RSS growth after warm-up (MB)", max(rss_growth.values(), default=0.0), "<=", 5.0)
    res.add_goal("worst fd growth after warm-up", max(fd_growth.values(), default=0), "<=", 0)
    res.notes.append(f"{soak.changes} changes in {cycle} cycles, {soak.kills} agent kills; seed {seed}")
    return res


def plot(result: BenchResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for key, s in result.series.items():
        if key.startswith("rss "):
            a.plot(s["t"], s["samples"], label=key[4:], linewidth=1)
        elif key.startswith("fds "):
            b.plot(s["t"], s["samples"], label=key[4:], linewidth=1)
    a.set_title("RSS (MB)")
    b.set_title("open fds")
    for ax in (a, b):
        ax.set_xlabel("seconds")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"fastpath bench soak: {result.params['up']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
