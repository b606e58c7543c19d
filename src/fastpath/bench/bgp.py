"""`fastpath bench bgp`: how fast BGP (BIRD 2, one per node) spreads and withdraws pod CIDRs.

For 2, 4 and 8 nodes, full mesh and route reflector (node1 reflects), interleaved round
by round (mesh, rr, mesh, rr ...), on real namespaces and real BIRD:
- up:       from starting every node's BIRD until every node's kernel has a route to
            every other node's pod CIDR;
- add:      from `node add` (reconfigure the running BIRDs in place, start the new one)
            until every node, old and new, has every other node's route;
- kill:     from SIGKILL of one (non-reflector) node's BIRD until no other node routes
            its CIDR (the kernel resets the dead BIRD's TCP sessions, so this is fast);
- cut:      from setting that node's underlay link down until no other node routes its
            CIDR (nothing tells the others: the hold timer does, so this is ~hold time).

Convergence is read from the kernel routing tables (`ip -j route show proto bird` in
each node netns, polled every POLL_S): a route in BIRD is not yet a route the packets
see. The poll costs ~5 ms per node on this 2-CPU VM, which bounds the resolution.
The topology is fastpath.bgp.testbed (bridge underlay, a stand-in pod address per
node): the same BGP path as the demo cluster without the pods, which BGP never sees.

And the same as a user sees it on the demo cluster (fastpath.podnet, one pod per node):
- cluster up:  the whole `fastpath up --nodes N --pods 1` (netns, veths, pods, then
               BIRD), which returns once every node routes every other node's CIDR;
- cluster add: the whole `fastpath node add` on that cluster, likewise.
"""

from __future__ import annotations

import signal
import time

from fastpath.bench.harness import BenchResult, progress
from fastpath.bgp import bird, speakers, store, sweep, testbed
from fastpath.bgp.model import Mesh, Timers
from fastpath.cleanup import sweep_all
from fastpath.podnet.build import Builder

DESCRIPTION = ("BGP convergence with BIRD: time from up and from node add until every node "
               "routes every other's pod CIDR (2/4/8 nodes, full mesh vs route reflector), "
               "and withdrawal time after a BIRD is killed or a link is cut")
POLL_S = 0.02
TIMEOUT_S = 30.0


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="2,4,8", help="node counts (default 2,4,8)")
    p.add_argument("--no-cut", action="store_true", help="skip the link-cut (hold timer) case")
    p.add_argument("--no-cluster", action="store_true",
                   help="skip the full demo-cluster runs (fastpath up / node add)")


def _wait(pred, timeout=TIMEOUT_S) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not converged within {timeout}s")
        time.sleep(POLL_S)
    return time.monotonic() - t0


def _gone(speakers, nodes, victim) -> bool:
    return all(victim.pod_cidr not in speakers.kernel_routes(n.netns) for n in nodes if n is not victim)


def _one(n: int, reflector: bool, cut: bool) -> dict[str, float]:

    nodes = []
    testbed.create_underlay()
    try:
        for i in range(1, n + 2):
            nodes.append(testbed.node_def(i))
            testbed.add_node(nodes[-1])
        mesh = Mesh(tuple(nodes[:n]), reflector="node1" if reflector else None)
        out = {}
        t0 = time.monotonic()
        speakers.apply(mesh)
        speakers.wait_converged(mesh, TIMEOUT_S, POLL_S)
        out["up"] = time.monotonic() - t0

        grown = mesh.with_node(nodes[n])
        t0 = time.monotonic()
        speakers.apply(grown)
        speakers.wait_converged(grown, TIMEOUT_S, POLL_S)
        out["add"] = time.monotonic() - t0

        victim = nodes[n]
        t0 = time.monotonic()
        bird.signal_bird(victim.name, signal.SIGKILL)
        _wait(lambda: _gone(speakers, nodes, victim))
        out["kill"] = time.monotonic() - t0

        if cut:
            speakers.apply(grown)
            speakers.wait_converged(grown, TIMEOUT_S, POLL_S)
            t0 = time.monotonic()
            testbed.set_underlay_link(victim, up=False)
            _wait(lambda: _gone(speakers, nodes, victim))
            out["cut"] = time.monotonic() - t0
        return out
    finally:
        sweep.sweep()
        testbed.destroy(nodes)


def _cluster(n: int, reflector: bool) -> dict[str, float]:
    """`fastpath up` and `fastpath node add` on the demo cluster, timed end to end (each
    returns only once BGP has converged everywhere), then `fastpath down`'s sweep."""

    try:
        with Builder() as b:
            t0 = time.monotonic()
            b.up(nodes=n, pods=1, routing_name="bgp",
                 routing_options={"route_reflector": "node1" if reflector else None})
            up = time.monotonic() - t0
            t0 = time.monotonic()
            b.add_node()
            add = time.monotonic() - t0
        mesh = store.load()
        assert mesh is not None  # `up` just stored it
        speakers.wait_converged(mesh, 1.0)  # what `up`/`add` promised
        return {"cluster up": up, "cluster add": add}
    finally:
        sweep_all()


def run(args) -> BenchResult:

    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 4] or sizes[:1]
    rounds = args.rounds or (1 if args.quick else 3)
    cut = not args.no_cut
    t = Timers()
    res = BenchResult("bgp", unit="s", params={
        "sizes": sizes, "rounds": rounds, "reflector": "node1", "poll_s": POLL_S,
        "timers": t.__dict__, "bird": "2.0.12", "link_cut": cut})
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        for n in sizes:
            for mode in ("mesh", "rr"):
                progress(f"{n} nodes: round {r + 1}/{rounds} {mode}")
                got = _one(n, mode == "rr", cut)
                if not args.no_cluster:
                    got.update(_cluster(n, mode == "rr"))
                for k, v in got.items():
                    samples.setdefault(f"{k} {mode} n={n}", []).append(v)
    order = ("up", "add", "kill", "cut", "cluster up", "cluster add")
    for key in sorted(samples, key=lambda k: (order.index(k.rsplit(" ", 2)[0]), int(k.split("=")[1]),
                                             k.rsplit(" ", 2)[1])):
        res.add_series(key, samples[key])
    for n in sizes:
        for phase in ("up", "add"):
            res.add_ratio(f"{phase} rr/mesh n={n}", f"{phase} rr n={n}", f"{phase} mesh n={n}")
        if cut:
            for mode in ("mesh", "rr"):
                res.add_goal(f"cut {mode} n={n} withdrawn within hold+1 s",
                             res.median(f"cut {mode} n={n}"), "<=", t.hold + 1)
    res.notes.append(f"timers: hold {t.hold}s, keepalive {t.keepalive}s, connect retry "
                     f"{t.connect_retry}s; convergence polled from kernel tables every "
                     f"{POLL_S * 1000:.0f} ms; shared 2-CPU VM, other work running")
    return res


def plot(result: BenchResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in ("up", "add", "kill", "cut", "cluster up", "cluster add")
              if any(k.rsplit(" ", 2)[0] == p for k in result.series)]
    sizes = result.params["sizes"]
    cols = min(3, len(phases))
    rows = (len(phases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(phases):]:
        ax.set_visible(False)
    for ax, phase in zip(axes.flat, phases):
        for mode, color in (("mesh", "#3b75af"), ("rr", "#e0823d")):
            med = [result.series[f"{phase} {mode} n={n}"]["median"] for n in sizes]
            lo = [result.series[f"{phase} {mode} n={n}"]["min"] for n in sizes]
            hi = [result.series[f"{phase} {mode} n={n}"]["max"] for n in sizes]
            ax.errorbar(sizes, med, yerr=[[m - a for m, a in zip(med, lo)],
                                          [b - m for m, b in zip(med, hi)]],
                        marker="o", capsize=3, color=color,
                        label="full mesh" if mode == "mesh" else "route reflector")
        ax.set_title(phase)
        ax.set_xlabel("nodes")
        ax.set_xticks(sizes)
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle("fastpath bench bgp: BIRD route convergence / withdrawal (median, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
