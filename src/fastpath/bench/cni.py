"""`fastpath bench cni`: the time a runtime waits for one pod's ADD and DEL.

Three contenders, each exec'd exactly as a runtime execs a CNI plugin (fork, setns into the
node's netns, exec the plugin file with the CNI_* environment and the config on stdin,
wait, read stdout), interleaved round by round (a b c a b c ...), all pinned to one CPU:
  (a) fastpath   the installed `fastpath` plugin (native launcher), `fastpath agent` listening
  (a') the same with the python launcher (an interpreter start per exec)
  (b) fastpath   the native launcher with no agent: it execs the python plugin, which does
      the work in its own process
  (c) ptp + host-local from Debian's containernetworking-plugins (the reference)
Each round ADDs one pod (a netns made once, as a runtime's sandbox) and DELs it again. The
node is a netns fp-[<tag>-]cnibench-host made for the run; nothing touches the root netns.
Samples are wall-clock milliseconds from fork to exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from fastpath import naming
from fastpath.bench.harness import BenchResult, cpus, progress
from fastpath.cni.install import install, install_report
from fastpath.errors import MissingDependency
from fastpath.kernel import netns
from fastpath.kernel.netns import setns

DESCRIPTION = "CNI ADD/DEL latency: fastpath-cni with and without the agent vs ptp + host-local"
REFERENCE = "/usr/lib/cni"
CONTENDERS = ("fastpath-agent", "fastpath-agent-pyclient", "fastpath-no-agent", "ptp+host-local")


def add_arguments(p) -> None:
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin everything to (default: the last)")


class _Node:
    """The bench's node and pod namespaces, the plugin dir, the agent; removed on close."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.tmp = tempfile.mkdtemp(prefix="fp-bench-cni-")
        self.host = naming.name("cnibench", "host")
        self.pod = naming.name("cnibench", "pod")
        self.agent: subprocess.Popen | None = None
        self.made: list[str] = []
        for n in (self.host, self.pod):
            netns.create(n)
            self.made.append(n)
        self.host_fd = os.open(netns.path_of(self.host), os.O_RDONLY | os.O_CLOEXEC)
        self.bin = os.path.join(self.tmp, "bin")
        os.mkdir(self.bin)
        self.native = install_report(self.bin, "fastpath", "native")["installed"]
        self.pybin = os.path.join(self.tmp, "pybin")
        os.mkdir(self.pybin)
        self.plugin = install(self.pybin, "fastpath", "python")
        self.socket = os.path.join(self.tmp, "agent.sock")
        self.state = os.path.join(self.tmp, "state")

    def start_agent(self) -> None:
        env = {**os.environ, "FASTPATH_STATE_DIR": self.state}
        self.agent = subprocess.Popen([sys.executable, "-m", "fastpath", "agent", "-v",
                                       "--socket", self.socket],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      preexec_fn=lambda: os.sched_setaffinity(0, {self.cpu}))
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket + ".pid"):
            if self.agent.poll() is not None or time.monotonic() > deadline:
                err = self.agent.stderr.read().decode() if self.agent.stderr else ""
                raise RuntimeError(f"fastpath agent did not start: {err}")
            time.sleep(0.02)

    def _child(self) -> None:
        # As a runtime does: the plugin runs in the node's netns, on our CPU.
        os.sched_setaffinity(0, {self.cpu})
        setns(self.host_fd)

    def exec(self, binary: str, command: str, conf: dict, extra_env: dict) -> float:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
               "CNI_CONTAINERID": "bench0", "CNI_NETNS": f"/run/netns/{self.pod}",
               "CNI_IFNAME": "eth0", "CNI_PATH": f"{self.bin}:{REFERENCE}",
               "FASTPATH_STATE_DIR": self.state, **extra_env}
        if os.environ.get("FASTPATH_INSTANCE"):
            env["FASTPATH_INSTANCE"] = os.environ["FASTPATH_INSTANCE"]
        data = json.dumps(conf).encode()
        t0 = time.perf_counter()
        p = subprocess.run([binary], input=data, env=env, capture_output=True, timeout=60,
                           preexec_fn=self._child, pass_fds=(self.host_fd,))
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            raise RuntimeError(f"{os.path.basename(binary)} {command} failed: "
                               f"{p.stdout.decode().strip()} {p.stderr.decode().strip()}")
        return dt

    def close(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        if self.agent is not None and self.agent.stderr and \
                os.environ.get("FASTPATH_BENCH_AGENT_LOG"):
            with open(os.environ["FASTPATH_BENCH_AGENT_LOG"], "wb") as f:
                f.write(self.agent.stderr.read())
        os.close(self.host_fd)
        for n in reversed(self.made):
            netns.delete(n)
        shutil.rmtree(self.tmp, ignore_errors=True)


def run(args):
    if not os.path.exists(f"{REFERENCE}/ptp") or not os.path.exists(f"{REFERENCE}/host-local"):
        raise MissingDependency(f"{REFERENCE}/ptp and host-local are needed",
                                hint="apt-get install containernetworking-plugins")
    rounds = args.rounds or (10 if args.quick else 60)
    cpu = args.cpu if args.cpu is not None else cpus()[-1]
    node = _Node(cpu)
    try:
        node.start_agent()
        fp_conf = {"cniVersion": "1.0.0", "name": "benchnet", "type": "fastpath",
                   "podCIDR": "10.250.1.0/24"}
        ref_conf = {"cniVersion": "1.0.0", "name": "benchref", "type": "ptp",
                    "ipam": {"type": "host-local", "subnet": "10.250.2.0/24",
                             "dataDir": os.path.join(node.tmp, "host-local")}}
        calls = {
            "fastpath-agent": (node.native, fp_conf, {"FASTPATH_AGENT_SOCKET": node.socket}),
            "fastpath-agent-pyclient": (node.plugin, fp_conf, {"FASTPATH_AGENT_SOCKET": node.socket}),
            "fastpath-no-agent": (node.native, fp_conf,
                                  {"FASTPATH_AGENT_SOCKET": os.path.join(node.tmp, "no-agent.sock")}),
            "ptp+host-local": (f"{REFERENCE}/ptp", ref_conf, {}),
        }
        samples = {f"{op}/{c}": [] for op in ("add", "del") for c in CONTENDERS}
        warmup = 2
        for r in range(warmup + rounds):
            for name in CONTENDERS:
                progress(f"ADD+DEL: {'warm-up' if r < warmup else f'round {r - warmup + 1}/{rounds}'}"
                         f" {name}")
                binary, conf, extra = calls[name]
                t_add = node.exec(binary, "ADD", conf, extra)
                t_del = node.exec(binary, "DEL", conf, extra)
                if r >= warmup:
                    samples[f"add/{name}"].append(t_add)
                    samples[f"del/{name}"].append(t_del)
    finally:
        node.close()

    res = BenchResult("cni", unit="ms", params={"rounds": rounds, "warmup": warmup, "cpu": cpu,
                                                "contenders": list(CONTENDERS),
                                                "cni_version": "1.0.0"})
    for key, s in samples.items():
        res.add_series(key, s)
    for op in ("add", "del"):
        for c in CONTENDERS[:3]:
            res.add_ratio(f"{op} {c} / ptp+host-local (median)", f"{op}/{c}", f"{op}/ptp+host-local")
            res.add_ratio(f"{op} {c} / ptp+host-local (p90)", f"{op}/{c}", f"{op}/ptp+host-local",
                          stat="p90")
        res.add_goal(f"{op.upper()} median ms of fastpath with agent, vs ptp+host-local:",
                     res.median(f"{op}/fastpath-agent"), "<=", res.median(f"{op}/ptp+host-local"))
    res.notes.append("wall time per exec (fork, setns, exec, wait) as a runtime waits for it; "
                     f"all processes pinned to CPU {cpu}; shared 2-CPU VM, other jobs running")
    return res


def plot(result, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"fastpath-agent": "#3b75af", "fastpath-agent-pyclient": "#6a9fd0",
              "fastpath-no-agent": "#b9d5ee", "ptp+host-local": "#e8853d"}
    width = 0.2
    for i, c in enumerate(CONTENDERS):
        med = [result.series[f"{op}/{c}"]["median"] for op in ("add", "del")]
        p90 = [result.series[f"{op}/{c}"]["p90"] for op in ("add", "del")]
        xs = [x + (i - 1.5) * width for x in range(2)]
        ax.bar(xs, med, width, color=colors[c], label=c,
               yerr=[[0, 0], [max(0, b - a) for a, b in zip(med, p90)]], capsize=4)
        for x, m in zip(xs, med):
            ax.text(x, m, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(2), ["ADD", "DEL"])
    ax.set_yscale("log")  # the no-agent bars are ~20x the others
    ax.set_ylabel("ms per exec, log scale (median, p90 whisker)")
    ax.set_title(f"fastpath bench cni: {result.params['rounds']} interleaved rounds, pinned")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
