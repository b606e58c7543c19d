"""The torture test's checks, pure: the byte streams each end sends (deterministic from a
seed, so the receiver can check every byte on arrival without a copy of what was sent),
the running checker, the verdict on one connection, and the report with its rendering.
torture.py runs the processes, namespaces and accel toggles around them.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from dataclasses import dataclass, field

from rich.console import Group

from fastpath.output import table

KINDS = ("loop-a", "loop-b", "pod-ab", "pod-ba")
MODES = ("clean",) * 7 + ("reset-client", "reset-server", "close-while-sending")
HEADER = struct.Struct("<QQQ")  # conn id, client seed, server seed
MIN_SIZE = 1


class Stream:
    """The bytes one end sends: messages of log-uniform size in [1, max_size] up to
    `budget` bytes, generated from `seed`; the receiver regenerates them to check."""

    def __init__(self, seed: int, budget: int, max_size: int) -> None:
        self.rng = random.Random(seed)
        self.left = budget
        self.max_size = max_size

    def next(self) -> bytes | None:
        if self.left <= 0:
            return None
        size = int(math.exp(self.rng.uniform(0, math.log(self.max_size))))
        size = max(MIN_SIZE, min(size, self.left))
        self.left -= size
        return self.rng.randbytes(size)


class Checker:
    """Compares arriving bytes with the peer's generator, so the first wrong byte is
    reported with its offset."""

    def __init__(self, seed: int, budget: int, max_size: int) -> None:
        self.gen = Stream(seed, budget, max_size)
        self.pending = b""
        self.offset = 0
        self.total = budget
        self.sha = hashlib.sha256()
        self.bad: str | None = None

    def feed(self, data: bytes) -> None:
        self.sha.update(data)
        view = memoryview(data)
        while view and self.bad is None:
            if not self.pending:
                nxt = self.gen.next()
                if nxt is None:
                    self.bad = f"{len(view)} bytes past the end of the stream at {self.offset}"
                    return
                self.pending = nxt
            n = min(len(view), len(self.pending))
            if view[:n] != self.pending[:n]:
                i = next(i for i in range(n) if view[i] != self.pending[i])
                self.bad = f"wrong byte at offset {self.offset + i}"
                return
            self.pending = self.pending[n:]
            view = view[n:]
            self.offset += n

    @property
    def complete(self) -> bool:
        return self.offset == self.total and self.bad is None


@dataclass
class EndResult:
    sent: int = 0
    received: int = 0
    sent_sha: str = ""
    recv_sha: str = ""
    error: str | None = None     # an errno name seen (ECONNRESET, EPIPE), or a failure
    failure: str | None = None   # what makes the run fail
    complete: bool = False


def judge(conn: dict) -> str | None:
    """Why one connection failed, or None."""
    c, s, mode = conn["client"], conn["server"], conn["mode"]
    for end, r in (("client", c), ("server", s)):
        if r.get("failure"):
            return f"{end}: {r['failure']}"
    if mode == "clean":
        for end, r, peer in (("client", c, s), ("server", s, c)):
            if not r["complete"] or r.get("error"):
                return (f"{end} got {r['received']} bytes and {r.get('error') or 'EOF'}, "
                        f"stream incomplete (bytes lost)")
            if r["recv_sha"] != peer["sent_sha"]:
                return f"{end}: sha256 differs from what the peer sent"
    return None


@dataclass
class TortureReport:
    seconds: float
    seed: int = 0
    toggles: int = 0
    connections: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counters: dict = field(default_factory=dict)
    worker_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.worker_error is None and bool(self.connections)

    def summary(self) -> dict:
        out: dict = {}
        for c in self.connections:
            k = out.setdefault(c["kind"], {"connections": 0, "accelerated": 0, "bytes": 0,
                                           "clean": 0, "aborted": 0})
            k["connections"] += 1
            k["accelerated"] += bool(c.get("client_accelerated") and c.get("server_accelerated"))
            k["bytes"] += c["client"].get("received", 0) + c["server"].get("received", 0)
            k["clean" if c["mode"] == "clean" else "aborted"] += 1
        return out

    def to_dict(self) -> dict:
        return {"ok": self.ok, "seconds": self.seconds, "seed": self.seed,
                "toggles": self.toggles,
                "by_kind": self.summary(), "failures": self.failures,
                "counters": self.counters, "worker_error": self.worker_error,
                "total_connections": len(self.connections)}


def add_counts(acc: dict, c: dict) -> None:
    """Sum per-CPU or per-run counters into acc."""
    for k, v in c.items():
        acc[k] = acc.get(k, 0) + v


def render(d: dict):

    rows = [(k, v["connections"], v["accelerated"], v["clean"], v["aborted"],
             f"{v['bytes'] / 1e6:.1f}") for k, v in d["by_kind"].items()]
    parts = [table(f"torture: {'PASS' if d['ok'] else 'FAIL'} ({d['total_connections']} "
                   f"connections, {d['toggles']} accel toggles, {d['seconds']:.0f} s, "
                   f"seed {d['seed']})",
                   ["kind", "connections", "accelerated", "clean", "aborted", "MB checked"], rows)]
    c = d.get("counters") or {}
    parts.append(f"redirected: {c.get('redirected_msgs', 0)} messages, "
                 f"{c.get('redirected_bytes', 0) / 1e6:.1f} MB; via stack: "
                 f"{c.get('passed_msgs', 0)} messages")
    if d["worker_error"]:
        parts.append(f"worker: {d['worker_error']}")
    parts += [f"FAIL {f}" for f in d["failures"][:50]]
    return Group(*parts)
