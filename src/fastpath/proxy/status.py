"""Reading a running proxy from outside: its run directory's JSON files (shared state the
master and workers refresh), and signals for reload and stop."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from rich.console import Group

from fastpath import naming
from fastpath.errors import ConfigError, FastpathError, NotFound
from fastpath.kernel import proc
from fastpath.output import table
from fastpath.proxy.master import run_dir, run_roots

PIPE_KEYS = ("created", "reused", "closed", "closed_dirty", "closed_idle", "failed",
             "resize_failed", "in_use", "free")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _refresh(d: Path, timeout: float = 1.0) -> None:
    """Ask every worker that has published once (SIGUSR1) for fresh figures, and wait
    for them; a busy or dying worker just leaves its last ones."""
    t0 = time.time()
    asked = []
    for f in d.glob("worker-*.json"):
        w = _read(f)
        if w and proc.alive(w.get("pid", 0)):
            try:
                os.kill(w["pid"], signal.SIGUSR1)
                asked.append(f)
            except OSError:
                pass
    deadline = time.monotonic() + timeout
    while asked and time.monotonic() < deadline:
        asked = [f for f in asked if (_read(f) or {}).get("updated", 0) < t0]
        if asked:
            time.sleep(0.01)


def _proxy(d: Path) -> dict | None:
    m = _read(d / "master.json")
    if not m or not proc.alive(m.get("pid", 0)):
        return None
    _refresh(d)
    workers = []
    for f in sorted(d.glob("worker-*.json")):
        w = _read(f)
        if w and proc.alive(w.get("pid", 0)):
            workers.append(w)
    pipes = {k: sum(w["pipes"].get(k, 0) for w in workers) for k in PIPE_KEYS}
    counters: dict[str, int] = {}
    for w in workers:
        for k, v in w.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
    services: dict[str, dict] = {}
    for w in workers:
        for s in w["services"]:
            agg = services.setdefault(s["name"], {"name": s["name"], "accepted": 0, "active": 0,
                                                  "refused": 0, "backends": {}})
            for k in ("accepted", "active", "refused"):
                agg[k] += s[k]
            for b in s["backends"]:
                ab = agg["backends"].setdefault(b["backend"], {"backend": b["backend"],
                                                               "up_in_workers": 0, "active": 0,
                                                               "total": 0, "errors": 0})
                ab["up_in_workers"] += b["up"]
                for k in ("active", "total", "errors"):
                    ab[k] += b[k]
    for s in services.values():
        s["backends"] = list(s["backends"].values())
    return {"name": m["name"], "pid": m["pid"], "config": m["config"],
            "generation": m["generation"], "last_reload": m.get("last_reload"),
            "mode": m.get("running_config", {}).get("mode"),
            "workers": [{"pid": w["pid"], "slot": w["slot"], "generation": w["generation"],
                         "draining": w["draining"], "connections": w["connections"],
                         "pipes": w["pipes"], "updated": w["updated"]} for w in workers],
            "connections": sum(w["connections"] for w in workers),
            "pipes": pipes, "counters": counters, "services": list(services.values())}


def collect(name: str | None = None) -> dict:
    dirs = [p for root in run_roots() for p in sorted(root.glob(naming.name("proxy") + "-*"))
            if p.is_dir()]
    if name:
        dirs = [d for d in dirs if d.name == run_dir(name).name] or [run_dir(name)]
    proxies = [p for p in (_proxy(d) for d in dirs) if p]
    if name and not proxies:
        raise NotFound(f"no proxy named {name!r} is running", hint="fastpath proxy run --config FILE")
    return {"proxies": proxies}


def render(data: dict):

    if not data["proxies"]:
        return "no proxy running"
    parts = []
    for p in data["proxies"]:
        lr = p.get("last_reload") or {}
        head = (f"proxy {p['name']} pid {p['pid']} generation {p['generation']} mode {p['mode']} "
                f"config {p['config']} connections {p['connections']}")
        if lr and not lr.get("ok"):
            head += f"\nlast reload REFUSED: {lr.get('error')}"
        parts.append(head)
        parts.append(table("workers", ["pid", "slot", "gen", "draining", "conns", "pipes in use",
                                       "pipes free"],
                           [(w["pid"], w["slot"], w["generation"], w["draining"], w["connections"],
                             w["pipes"]["in_use"], w["pipes"]["free"]) for w in p["workers"]]))
        parts.append(table("pipe pool", ["counter", "pipes"],
                           [(k.replace("_", " "), p["pipes"][k]) for k in PIPE_KEYS]))
        for s in p["services"]:
            parts.append(table(f"service {s['name']}: {s['accepted']} accepted, {s['active']} "
                               f"active, {s['refused']} refused",
                               ["backend", "up in workers", "active", "total", "errors"],
                               [(b["backend"], f"{b['up_in_workers']}/{len(p['workers'])}",
                                 b["active"], b["total"], b["errors"]) for b in s["backends"]]))
        if p["counters"]:
            parts.append(table("counters", ["counter", "value"], sorted(p["counters"].items())))
    return Group(*parts)


def _master(name: str) -> dict:
    m = _read(run_dir(name) / "master.json")
    if not m or not proc.alive(m.get("pid", 0)):
        raise NotFound(f"no proxy named {name!r} is running")
    return m


def reload(name: str, timeout: float = 10.0) -> dict:
    """SIGHUP the master and wait for its verdict: a new generation, or the refusal."""
    m = _master(name)
    before = (m.get("last_reload") or {}).get("time", 0)
    os.kill(m["pid"], signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = _read(run_dir(name) / "master.json") or {}
        lr = cur.get("last_reload") or {}
        if lr.get("time", 0) > before:
            if not lr.get("ok"):
                raise ConfigError(f"reload refused, running config kept: {lr.get('error')}")
            return {"name": name, "pid": m["pid"], "generation": lr["generation"]}
        time.sleep(0.05)
    raise FastpathError(f"proxy {name!r} did not answer the reload within {timeout:.0f}s",
                        op="reload")


def stop(name: str, timeout: float = 40.0) -> dict:
    m = _master(name)
    pid = m["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive(pid):
            return {"name": name, "pid": pid, "stopped": True}
        time.sleep(0.05)
    raise FastpathError(f"proxy {name!r} (pid {pid}) still running after {timeout:.0f}s",
                        op="stop", hint="its connections may not drain; fastpath down kills it")
