"""fastpath bench podnet: pods/s to wire and unwire pods on one node, fastpath vs the
reference CNI `ptp` plugin with `host-local` IPAM (containernetworking-plugins).

What each contender does per pod, timed (the CNI ADD / DEL part; the pod netns is made
before and removed after by the same code for both, as a runtime does):
  fastpath ADD: IPAM lease in SQLite (fastpath.podnet.ipam) + attach (veth into the pod
                netns, address, routes; one rtnetlink socket per netns, the node's reused)
  fastpath DEL: detach + IPAM release
  ptp ADD/DEL:  exec /usr/lib/cni/ptp with CNI_COMMAND/CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME/
                CNI_PATH and the network config on stdin, exactly as a runtime does; it
                execs host-local for the address (dataDir in a temp dir); ipMasq off.
Both run as the host of one node netns (the ptp process is setns'd there before exec).
Rounds alternate: fastpath N pods add, delete; ptp N pods add, delete; repeat. The bench
process and the plugins are pinned to one CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

from fastpath import naming
from fastpath.bench.harness import BenchResult, cpus, pin, progress
from fastpath.errors import MissingDependency
from fastpath.kernel import netns
from fastpath.podnet import attach, netfilter, sysctl
from fastpath.podnet.ipam import Ipam
from fastpath.podnet.rtnl import Rtnl

DESCRIPTION = "pods/s to add and delete pods on one node: fastpath vs CNI ptp + host-local"
CNI_DIR = "/usr/lib/cni"


def add_arguments(p) -> None:
    p.add_argument("--pods", type=int, default=100, help="pods per round (default 100)")
    p.add_argument("--cni-dir", default=CNI_DIR, help="reference plugins (default %(default)s)")


def _cni_env(cmd: str, cid: str, ns_path: str, cni_dir: str) -> dict:
    return {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": ns_path, "CNI_IFNAME": "eth0",
            "CNI_PATH": cni_dir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def run(args) -> BenchResult:

    n = 20 if args.quick else args.pods
    rounds = args.rounds or (1 if args.quick else 3)
    ptp = os.path.join(args.cni_dir, "ptp")
    if not os.access(ptp, os.X_OK) or not os.access(os.path.join(args.cni_dir, "host-local"), os.X_OK):
        raise MissingDependency(f"reference plugins not found in {args.cni_dir}",
                                hint="apt-get install containernetworking-plugins")
    cpu = cpus()[-1]
    pin(cpu)
    res = BenchResult("podnet", unit="pods/s", params={"pods": n, "rounds": rounds, "cpu": cpu,
                                                        "reference": f"{ptp} + host-local "
                                                                     "(cniVersion 1.0.0)"})
    host = naming.name("bench-host")
    pods = [naming.name("bench-p", str(i)) for i in range(n)]
    data_dir = tempfile.mkdtemp(prefix="fp-bench-hostlocal-")
    ipam = Ipam(space=naming.scope() + "bench/")
    conf = json.dumps({"cniVersion": "1.0.0", "name": naming.name("bench"), "type": "ptp", "ipMasq": False,
                       "mtu": 1500, "ipam": {"type": "host-local", "dataDir": data_dir,
                                             "ranges": [[{"subnet": "10.78.0.0/16"}]]}})
    samples: dict[str, list[float]] = {k: [] for k in ("fastpath add", "ptp add", "fastpath del", "ptp del")}
    lat: dict[str, list[float]] = {k: [] for k in samples}
    hostfd = None
    try:
        netns.create(host)
        sysctl.write(host, sysctl.NODE_SYSCTLS)
        netfilter.ensure_forward(host)
        hostfd = os.open(f"/run/netns/{host}", os.O_RDONLY)
        host_rtnl = Rtnl(host)

        def make_pods():
            for p in pods:
                netns.create(p)

        def drop_pods():
            for p in pods:
                netns.delete(p)

        def fastpath_round():
            make_pods()
            t0 = time.perf_counter()
            for i, p in enumerate(pods):
                t = time.perf_counter()
                ip = ipam.allocate("10.77.0.0/16", f"bench/{i}")
                with Rtnl(p) as pr:
                    attach.attach(host_rtnl, pr, host_ifname=f"fpb{i}", address=f"{ip}/32")
                lat["fastpath add"].append(time.perf_counter() - t)
            t1 = time.perf_counter()
            for i in range(len(pods)):
                t = time.perf_counter()
                attach.detach(host_rtnl, host_ifname=f"fpb{i}")
                ipam.release(f"bench/{i}")
                lat["fastpath del"].append(time.perf_counter() - t)
            t2 = time.perf_counter()
            drop_pods()
            samples["fastpath add"].append(n / (t1 - t0))
            samples["fastpath del"].append(n / (t2 - t1))

        def cni(cmd, i, p):
            def enter():
                os.sched_setaffinity(0, {cpu})
                netns.setns(hostfd)
            r = subprocess.run([ptp], input=conf, capture_output=True, text=True, preexec_fn=enter,
                               env=_cni_env(cmd, f"fpbench{i:04d}", f"/run/netns/{p}", args.cni_dir),
                               timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"ptp {cmd} failed: {r.stdout.strip()} {r.stderr.strip()}")

        def ptp_round():
            make_pods()
            t0 = time.perf_counter()
            for i, p in enumerate(pods):
                t = time.perf_counter()
                cni("ADD", i, p)
                lat["ptp add"].append(time.perf_counter() - t)
            t1 = time.perf_counter()
            for i, p in enumerate(pods):
                t = time.perf_counter()
                cni("DEL", i, p)
                lat["ptp del"].append(time.perf_counter() - t)
            t2 = time.perf_counter()
            drop_pods()
            samples["ptp add"].append(n / (t1 - t0))
            samples["ptp del"].append(n / (t2 - t1))

        for i in range(rounds):
            progress(f"{n} pods: round {i + 1}/{rounds} fastpath")
            fastpath_round()
            progress(f"{n} pods: round {i + 1}/{rounds} ptp + host-local")
            ptp_round()
        host_rtnl.close()
    finally:
        for p in pods:
            netns.delete(p)
        if hostfd is not None:
            os.close(hostfd)
        netns.delete(host)
        ipam.forget_space()
        shutil.rmtree(data_dir, ignore_errors=True)
    for k, v in samples.items():
        ms = sorted(x * 1000 for x in lat[k])
        res.add_series(k, v, per_pod_ms_median=ms[len(ms) // 2], per_pod_ms_p99=ms[int(len(ms) * 0.99) - 1],
                       per_pod_ms=[round(x * 1000, 3) for x in lat[k]])
    r = res.add_ratio("add: fastpath / ptp", "fastpath add", "ptp add")
    res.add_ratio("del: fastpath / ptp", "fastpath del", "ptp del")
    res.add_goal("add rate fastpath / ptp", r, ">=", 1.0)
    res.notes.append("pods/s per round (median over rounds); per-pod latency medians in the series "
                     "(per_pod_ms_median); shared 2-CPU VM, others running")
    return res


def plot(result: BenchResult, path: str) -> None:
    """Left: pods/s per contender (median over rounds, min-max whiskers). Right: the
    per-pod time of each ADD and DEL (box plot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(result.series)
    colors = ["#3b75af" if k.startswith("fastpath") else "#999999" for k in keys]
    med = [result.series[k]["median"] for k in keys]
    lo = [m - result.series[k]["min"] for k, m in zip(keys, med)]
    hi = [result.series[k]["max"] - m for k, m in zip(keys, med)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    a.bar(range(len(keys)), med, yerr=[lo, hi], capsize=4, color=colors)
    a.set_xticks(range(len(keys)), keys, rotation=20, ha="right")
    a.set_ylabel("pods/s (higher is better)")
    a.set_title(f"{result.params.get('pods')} pods per round, {result.params.get('rounds')} rounds")
    b.boxplot([result.series[k].get("per_pod_ms", []) for k in keys], showfliers=False)
    b.set_xticks(range(1, len(keys) + 1), keys, rotation=20, ha="right")
    b.set_ylabel("ms per pod (lower is better)")
    b.set_title("time per CNI ADD / DEL")
    fig.suptitle("fastpath bench podnet: fastpath vs CNI ptp + host-local")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
