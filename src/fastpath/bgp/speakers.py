"""The cluster's BGP speakers as a whole: bring the set of running BIRDs to a Mesh, read
their sessions, wait for convergence, and answer "is the session to node X down".

`apply(mesh)` is the one way BIRDs change: it validates the mesh and has BIRD parse
every node's new config before any running BIRD or config file is touched; then it
reconfigures running BIRDs in place, starts missing ones and stops those of nodes that
left. The order keeps sessions quiet: nodes that stay are reconfigured first (so they
already expect a new peer, or drop a leaving one with a Cease), then new nodes start,
then leaving nodes stop. A failure midway puts the touched nodes back on their previous
config.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from fastpath.bgp import bird, store
from fastpath.bgp.config import peer_of_protocol, peer_protocol, render
from fastpath.bgp.control import BirdControl, Protocol
from fastpath.bgp.model import Mesh, validate
from fastpath.errors import FastpathError, NotFound


@dataclass
class ApplyReport:
    started: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def render_all(mesh: Mesh) -> dict[str, str]:
    return {n.name: render(mesh, n.name, str(bird.BirdPaths.of(n.name).log)) for n in mesh.nodes}


@contextlib.contextmanager
def _locked():
    """One writer of the instance's BIRDs at a time (two `node add` at once would each
    render a mesh without the other's node): flock(2) on a file in the BIRD directory."""
    d = bird.bgp_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def apply(mesh: Mesh, previous: Mesh | None = None) -> ApplyReport:
    """Make the running BIRDs match `mesh`. `previous` defaults to the stored mesh."""
    validate(mesh)
    bird.bird_binary()
    with _locked():
        return _apply(mesh, previous)


def _apply(mesh: Mesh, previous: Mesh | None) -> ApplyReport:
    if previous is None:
        previous = store.load()
    texts = render_all(mesh)
    for name, text in texts.items():  # BIRD parses every config before anything changes
        bird.check_config(text, bird.BirdPaths.of(name))
    old_texts = render_all(previous) if previous else {}
    names = {n.name for n in mesh.nodes}
    leaving = [n for n in (previous.nodes if previous else ()) if n.name not in names]
    report = ApplyReport()
    try:
        for n in mesh.nodes:
            if bird.running_pid(n.name):
                answer = bird.reconfigure(n.name, texts[n.name])
                (report.unchanged if answer.startswith("Nothing") else report.reconfigured).append(n.name)
        for n in mesh.nodes:
            if n.name not in report.reconfigured and n.name not in report.unchanged:
                bird.start(n.name, n.netns, texts[n.name])
                report.started.append(n.name)
    except BaseException:
        _undo(report, old_texts)
        raise
    for n in leaving:
        bird.stop(n.name)
        report.stopped.append(n.name)
    store.save(mesh)
    return report


def _undo(report: ApplyReport, old_texts: dict[str, str]) -> None:
    for name in report.started:
        bird.stop(name)
    for name in report.reconfigured:
        if name in old_texts:
            try:
                bird.reconfigure(name, old_texts[name])
            except FastpathError:
                pass  # the original error is the one to report


def stop_all(mesh: Mesh | None = None) -> list[str]:
    mesh = mesh or store.load()
    out = []
    for n in (mesh.nodes if mesh else ()):
        if bird.stop(n.name):
            out.append(n.name)
    store.forget()
    return out


# ---------------------------------------------------------------- reading state

@dataclass
class Session:
    """One node's view of its BGP session with `peer`."""

    node: str
    peer: str
    state: str             # BIRD's BGP FSM state, or "bird down" when the node's BIRD is not running
    since: str | None
    uptime_s: float | None
    imported: int | None
    exported: int | None
    info: str
    last_error: str | None

    @property
    def established(self) -> bool:
        return self.state == "Established"

    def to_dict(self) -> dict:
        return {**self.__dict__, "established": self.established}


def session_of(node: str, p: Protocol) -> Session:
    """The Session a node's BIRD protocol `p` describes."""
    up = None
    if p.since and p.established:
        up = max(0.0, (dt.datetime.now() - p.since).total_seconds())
    return Session(node=node, peer=peer_of_protocol(p.name) or p.name,
                   state=p.bgp_state or p.state,
                   since=p.since.isoformat(timespec="milliseconds") if p.since else None,
                   uptime_s=up, imported=p.imported, exported=p.exported, info=p.info,
                   last_error=p.last_error)


def node_protocols(name: str) -> list[Protocol] | None:
    """All protocols of the node's BIRD, None when its BIRD is not running."""
    if not bird.running_pid(name):
        return None
    try:
        with BirdControl(str(bird.BirdPaths.of(name).ctl)) as ctl:
            return ctl.protocols()
    except FastpathError:
        if not bird.running_pid(name):
            return None
        raise


def node_sessions(mesh: Mesh, name: str) -> list[Session]:
    """The node's BGP sessions, one per peer the mesh gives it."""
    protos = node_protocols(name)
    by_name = {p.name: p for p in protos or ()}
    out = []
    for peer, _ in mesh.peers(name):
        p = by_name.get(peer_protocol(peer.name))
        if protos is None or p is None:
            out.append(Session(name, peer.name, "bird down" if protos is None else "missing",
                               None, None, None, None, "", None))
        else:
            out.append(session_of(name, p))
    return out


def all_sessions(mesh: Mesh | None = None) -> dict[str, list[Session]]:
    mesh = mesh or store.load()
    if mesh is None:
        return {}
    return {n.name: node_sessions(mesh, n.name) for n in mesh.nodes}


def kernel_routes(netns: str) -> set[str]:
    """Destinations BIRD installed in the netns's main table (`proto bird`)."""
    p = subprocess.run(["ip", "-j", "-n", netns, "route", "show", "proto", "bird"],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise FastpathError(p.stderr.strip() or "ip route failed", op=f"read routes of {netns}")
    return {r["dst"] if "/" in r["dst"] else r["dst"] + "/32" for r in json.loads(p.stdout or "[]")}


def missing_routes(mesh: Mesh) -> dict[str, set[str]]:
    """Per node, the other nodes' pod CIDRs its kernel has no BIRD route for."""
    out = {}
    for n in mesh.nodes:
        want = {o.pod_cidr for o in mesh.nodes if o.name != n.name}
        lack = want - kernel_routes(n.netns)
        if lack:
            out[n.name] = lack
    return out


def wait_converged(mesh: Mesh, timeout: float = 30.0, interval: float = 0.05) -> float:
    """Block until every node's kernel has every other node's pod CIDR; returns seconds
    waited. Raises FastpathError naming what is still missing at the timeout."""
    t0 = time.monotonic()
    while True:
        lack = missing_routes(mesh)
        if not lack:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            detail = "; ".join(f"{k} lacks {', '.join(sorted(v))}" for k, v in sorted(lack.items()))
            raise FastpathError(f"BGP did not converge within {timeout:.0f}s: {detail}",
                                op="wait for BGP convergence")
        time.sleep(interval)


# ---------------------------------------------------------------- for trace

def session_to(node: str, peer: str, mesh: Mesh | None = None) -> Session:
    """`node`'s session to `peer` (NotFound if the mesh gives them none)."""
    mesh = mesh or store.load()
    if mesh is None:
        raise NotFound("no BGP mesh in this cluster (routing is not bgp)")
    for s in node_sessions(mesh, node):
        if s.peer == peer:
            return s
    raise NotFound(f"node {node!r} has no BGP session to {peer!r}")


def route_cause(src: str, dst: str, mesh: Mesh | None = None) -> str | None:
    """Why node `src` may lack a route to node `dst`'s pod CIDR, as far as BGP goes: a
    one-line cause if a BGP session on the path (src-dst in a full mesh; src-reflector
    and reflector-dst with a route reflector) is down or either BIRD is not running;
    None if every session on the path is Established (or routing is not bgp)."""
    mesh = mesh or store.load()
    if mesh is None or src == dst:
        return None
    names = {n.name for n in mesh.nodes}
    for n in (src, dst):
        if n not in names:
            raise NotFound(f"no node {n!r} in the BGP mesh")
    rr = mesh.reflector
    hops = [(src, dst)] if rr is None or rr in (src, dst) else [(src, rr), (rr, dst)]
    for a, b in hops:
        for x in (a, b):
            if not bird.running_pid(x):
                return f"BIRD of node {x} is not running, so {src} has no BGP route to {dst}'s pods"
        s = session_to(a, b, mesh)
        if not s.established:
            why = f" ({s.last_error})" if s.last_error else (f" ({s.info})" if s.info else "")
            return f"BGP session {a} -> {b} is down: {s.state}{why}"
    return None


def session_down(node: str, peer: str) -> bool:
    """Whether the BGP session between `node` and `peer` is down (not Established), from
    `node`'s BIRD; a stopped BIRD counts as down."""
    return not session_to(node, peer).established
