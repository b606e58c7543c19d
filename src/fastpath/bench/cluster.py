"""`fastpath bench cluster`: node agents on the embedded SQLite datastore against a
3-member etcd, on the demo cluster (one agent per node netns), for 2, 4 and 8 nodes.

- service programming: from `service add` (the writer stamps the object) until every
  node's agent reports the service programmed (its status, written right after it
  published the service table its proxy reads), polled every POLL_S;
- pod programming: from a pod's CNI ADD on one node, through that node's agent, until
  every node's table lists the pod as a backend of a service that selects it;
- route programming, apart (BGP timers bound it): from `node add` until every node
  routes the new node's pod CIDR;
- agent CPU (% of one core) and RSS: at idle, and while one node takes 50 pod ADD+DEL
  per second; every agent is measured (the others follow the churn through the watch).

The datastores alternate per size (sqlite, etcd, sqlite, etcd ...); each run builds its
own cluster with `fastpath up` and removes it.
"""

from __future__ import annotations

import os
import time

from fastpath import naming
from fastpath.agent import demo
from fastpath.bench.harness import BenchResult, progress
from fastpath.cleanup import sweep_all
from fastpath.cluster.objects import Service
from fastpath.cluster.store import ClusterStore
from fastpath.kernel import netns
from fastpath.podnet import cluster as cl
from fastpath.podnet.build import Builder

DESCRIPTION = ("node agents: programming latency from a service add or a pod ADD until every "
               "node shows it, agent CPU and RSS idle and under 50 pod ADD+DEL/s; sqlite vs "
               "etcd, 2/4/8 nodes")
POLL_S = 0.002
TIMEOUT_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="2,4,8", help="node counts (default 2,4,8)")
    p.add_argument("--changes", type=int, default=None, help="service adds and pod ADDs timed per run")
    p.add_argument("--idle", type=float, default=None, help="seconds of idle CPU measurement")
    p.add_argument("--churn", type=float, default=None, help="seconds of 50/s pod ADD+DEL")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime, stime


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_percent(pids: list[int], seconds: float, work=None) -> list[float]:
    before = {p: _cpu_ticks(p) for p in pids}
    t0 = time.monotonic()
    if work is not None:
        work(seconds)
    else:
        time.sleep(seconds)
    dt = time.monotonic() - t0
    return [100.0 * (_cpu_ticks(p) - before[p]) / CLK_TCK / dt for p in pids]


def _seen_everywhere(nodes: list[str], pred, t_write: float) -> float:
    """Seconds from t_write (wall clock) until pred(status) holds on every node."""
    pending = set(nodes)
    deadline = time.monotonic() + TIMEOUT_S
    while pending:
        for n in list(pending):
            st = demo.read_node_status(n) or {}
            if pred(st):
                pending.discard(n)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes {sorted(pending)} did not show the change within {TIMEOUT_S}s")
        time.sleep(POLL_S)
    return time.time() - t_write


def _service_latency(nodes: list[str], i: int) -> float:
    name = f"bench{i}"
    t = time.time()
    with ClusterStore.open() as cs:
        cs.put_service(Service(name=name, listen=f"10.97.{i // 250}.{i % 250 + 1}:80",
                               backends=("10.244.1.2:80",), stamp=t))
    return _seen_everywhere(nodes, lambda st: name in st.get("services", {}), t)


def _pod_latency(r: demo.AgentRouting, node, nodes: list[str], i: int) -> float:
    pod = f"bp{i}"
    ns = naming.name("pod", pod)
    netns.create(ns)
    try:
        t = time.time()
        ip, _ = r.add_pod(node, pod, ns)
        lat = _seen_everywhere(nodes, lambda st: f"{ip}:80" in
                               (st.get("services", {}).get("bench-pods") or {}).get("backends", []), t)
        r.del_pod(node, pod, ns)
        return lat
    finally:
        netns.delete(ns)


def _churn(r: demo.AgentRouting, node, rate: float = 50.0):
    """ADD+DEL pairs at `rate` per second on `node`, through its agent."""
    pods = [f"ch{i}" for i in range(4)]
    for p in pods:
        netns.create(naming.name("pod", p))

    def work(seconds: float) -> None:
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            p = pods[k % len(pods)]
            r.add_pod(node, p, naming.name("pod", p))
            r.del_pod(node, p, naming.name("pod", p))
            k += 1
            lag = t0 + k / rate - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        work.done = k  # type: ignore[attr-defined]

    return pods, work


def _one(n: int, ds: str, changes: int, idle_s: float, churn_s: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    try:
        with Builder() as b:
            b.up(nodes=n, pods=1, routing_name="agent", routing_options={"datastore": ds})
        c = cl.require()
        names = [x.name for x in c.nodes]
        pids = [demo.agent_pid(x) for x in names]
        assert all(pids)
        r = demo.AgentRouting()
        time.sleep(1.0)
        out["idle cpu %"] = _cpu_percent(pids, idle_s)  # type: ignore[arg-type]
        out["idle rss MB"] = [_rss_mb(p) for p in pids]  # type: ignore[arg-type]
        out["service programming"] = [_service_latency(names, i) for i in range(changes)]
        with ClusterStore.open() as cs:
            cs.put_service(Service(name="bench-pods", listen="10.98.0.1:80", pods="bp", port=80))
        _seen_everywhere(names, lambda st: "bench-pods" in st.get("services", {}), time.time())
        out["pod programming"] = [_pod_latency(r, c.nodes[i % n], names, i) for i in range(changes)]
        pods, work = _churn(r, c.nodes[0])
        try:
            out["churn cpu %"] = _cpu_percent(pids, churn_s, work)  # type: ignore[arg-type]
            out["churn ops/s"] = [2 * work.done / churn_s]
            out["churn rss MB"] = [_rss_mb(p) for p in pids]  # type: ignore[arg-type]
        finally:
            for p in pods:
                netns.delete(naming.name("pod", p))
        t0 = time.monotonic()
        with Builder() as b:
            b.add_node()   # returns once every agent is ready and every node routes every CIDR
        out["route programming (node add)"] = [time.monotonic() - t0]
    finally:
        sweep_all()
    return out


def run(args) -> BenchResult:
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 2] or sizes[:1]
    changes = args.changes or (5 if args.quick else 30)
    idle_s = args.idle or (2.0 if args.quick else 10.0)
    churn_s = args.churn or (2.0 if args.quick else 5.0)
    rounds = args.rounds or 1
    res = BenchResult("cluster", unit="s", params={
        "sizes": sizes, "changes": changes, "idle_s": idle_s, "churn_s": churn_s, "rounds": rounds,
        "poll_s": POLL_S, "etcd": "3 members in the underlay netns", "lease_ttl": demo.LEASE_TTL})
    samples: dict[str, list[float]] = {}
    for rnd in range(rounds):
        for n in sizes:
            for ds in ("sqlite", "etcd"):
                progress(f"{n} nodes on {ds}: round {rnd + 1}/{rounds}")
                for k, v in _one(n, ds, changes, idle_s, churn_s).items():
                    samples.setdefault(f"{k} {ds} n={n}", []).extend(v)
    for key in sorted(samples, key=lambda k: (k.split(" n=")[0], int(k.split("=")[1]))):
        unit = "%" if "cpu" in key else "MB" if "MB" in key else "ops/s" if "ops/s" in key else "s"
        res.add_series(key, samples[key], unit=unit)
    for n in sizes:
        for kind in ("service", "pod"):
            res.add_ratio(f"{kind} programming p99 etcd/sqlite n={n}",
                          f"{kind} programming etcd n={n}", f"{kind} programming sqlite n={n}", stat="p99")
    big = max(sizes)
    for kind in ("service", "pod"):
        key = f"{kind} programming etcd n={big}"
        res.add_goal(f"{kind} programming p99, {big} nodes on etcd (s)", res.series[key]["p99"], "<=", 0.1)
    rss = max(max(v) for k, v in samples.items() if "rss" in k)
    idle = max(max(v) for k, v in samples.items() if k.startswith("idle cpu"))
    res.add_goal("agent RSS, worst (MB)", rss, "<=", 80)
    res.add_goal("agent idle CPU, worst (% of a core)", idle, "<=", 1.0)
    res.notes.append(f"programming polled from each agent's status every {POLL_S * 1000:.0f} ms; "
                     "routes through BIRD are reported apart (BGP connect delay 1 s bounds them)")
    return res


def plot(result: BenchResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result.params["sizes"]
    panels = [("service programming", "p99 and median (s)"), ("pod programming", "p99 and median (s)"),
              ("idle cpu %", "% of a core"), ("churn cpu %", "% of a core"), ("idle rss MB", "MB")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (what, ylabel) in zip(axes.flat, panels):
        for ds, color in (("sqlite", "#3b75af"), ("etcd", "#e0823d")):
            keys = [f"{what} {ds} n={n}" for n in sizes]
            med = [result.series[k]["median"] for k in keys]
            ax.plot(sizes, med, marker="o", color=color, label=f"{ds} median")
            if "programming" in what:
                ax.plot(sizes, [result.series[k]["p99"] for k in keys], marker="^", linestyle="--",
                        color=color, label=f"{ds} p99")
        ax.set_title(what)
        ax.set_xlabel("nodes")
        ax.set_xticks(sizes)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.suptitle("fastpath bench cluster: node agents on sqlite vs etcd")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
