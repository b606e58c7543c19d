"""Node proxies on the demo cluster (`fastpath up`): one proxy per node, in the node's
netns, listening on a service VIP that every node holds on its loopback; a demo backend
in every pod; every pod's traffic to the VIP goes to its own node (pods route everything
through their node), whose proxy forwards it to backend pods anywhere in the cluster
(routing mode: no NAT, no overlay). This is the sidecarless model: one proxy per node.

Processes started here (proxies, pod backends) carry this instance's FASTPATH_INSTANCE
and are stopped by the proxy sweep (`fastpath down`); the VIP addresses go with the
node namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time

from fastpath.errors import AlreadyExists, FastpathError, UsageError
from fastpath.kernel import proc
from fastpath.podnet import cluster
from fastpath.proxy.master import run_dir, run_roots
from fastpath.sockredir import loader

DEFAULT_VIP = "10.96.0.10"
DEFAULT_PORT = 80
BACKEND_PORT = 8080


def _spawn(argv: list[str], log: str) -> int:
    with open(log, "a") as f:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
    return p.pid


def _running(name: str) -> int | None:
    """The pid of a live proxy named `name`: its own or one a node agent runs."""
    for root in run_roots():
        try:
            m = json.loads((root / run_dir(name).name / "master.json").read_text())
        except (OSError, ValueError):
            continue
        if proc.alive(m.get("pid", 0)):
            return m["pid"]
    return None


def _probe(pod_netns: str, vip: str, port: int, wrap: list[str], tries: int = 40) -> str:
    """From inside a pod: connect to the VIP, send a line, read the answer."""
    code = ("import socket,sys,time\n"
            "for i in range(%d):\n"
            "  try:\n"
            "    s=socket.create_connection((%r,%d),1);s.sendall(b'hello\\n')\n"
            "    print(s.recv(200).decode().strip());break\n"
            "  except OSError as e:\n"
            "    err=e;time.sleep(0.1)\n"
            "else:\n  print('error', err)\n") % (tries, vip, port)
    out = subprocess.run([*wrap, "ip", "netns", "exec", pod_netns, sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=tries * 1.2 + 10)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def up(vip: str = DEFAULT_VIP, port: int = DEFAULT_PORT, workers: int = 1,
       mode: str = "auto") -> dict:
    try:
        ipaddress.IPv4Address(vip)
    except ValueError:
        raise UsageError(f"--vip {vip!r} is not an IPv4 address") from None
    c = cluster.require()
    if not c.pods:
        raise UsageError("the cluster has no pods to serve as backends", hint="fastpath pod add NODE")
    for n in c.nodes:
        if (pid := _running(n.name)) is not None:
            raise AlreadyExists(f"a proxy already runs on {n.name} (pid {pid})",
                                hint="fastpath down, or fastpath proxy stop --name NODE")
    wrap = accel_wrap()
    base = run_dir("demo")
    backends, started = start_backends(c, wrap)
    for n in c.nodes:
        r = subprocess.run(["ip", "-n", n.netns, "addr", "replace", f"{vip}/32", "dev", "lo"],
                           capture_output=True, text=True)
        if r.returncode:
            raise FastpathError(r.stderr.strip(), op=f"add VIP {vip} to {n.netns}")
        cfg = base / f"{n.name}.cfg"
        cfg.write_text("\n".join(
            ["global", f"    workers {workers}", f"    mode {mode}",
             "service demo", f"    listen {vip}:{port}", "    balance roundrobin",
             *[f"    backend {p.ip}:{BACKEND_PORT}" for p in backends],
             "    check interval 1s timeout 500ms fall 2 rise 1", ""]))
        _spawn([*wrap, sys.executable, "-m", "fastpath", "proxy", "run", "-c", str(cfg),
                "--netns", n.netns, "--name", n.name], str(base / f"proxy-{n.name}.log"))
        started.append(f"proxy {n.name} {vip}:{port} in {n.netns}")
    deadline = time.monotonic() + 15
    for n in c.nodes:
        while _running(n.name) is None:
            if time.monotonic() > deadline:
                raise FastpathError(f"the proxy on {n.name} did not start; see "
                                    f"{base / f'proxy-{n.name}.log'}", op="fastpath proxy demo")
            time.sleep(0.1)
    time.sleep(0.5)  # first health checks
    reached = probe_all(c, vip, port, wrap, backends)
    return {"vip": f"{vip}:{port}", "started": started, "probes": reached, "accel": bool(wrap),
            "ok": all(r["ok"] for r in reached)}


def accel_wrap() -> list[str]:
    """With `fastpath accel` enabled in this instance, the proxies, backends and probes run
    in its cgroup: their TCP is redirected socket to socket, and the proxies copy (splice
    cannot see redirected bytes) on exactly the sockets that need it."""
    if loader.is_enabled():
        return [sys.executable, "-m", "fastpath", "accel", "run", "--"]
    return []


def start_backends(c, wrap: list[str]) -> tuple[list, list[str]]:
    """A demo backend in every pod with an address (answers with its pod's name)."""
    base = run_dir("demo")
    base.mkdir(parents=True, exist_ok=True)
    backends = [p for p in c.pods if p.ip]
    started: list[str] = []
    for p in backends:
        # into the cgroup first: `ip netns exec` mounts its own /sys, without the pins
        _spawn([*wrap, "ip", "netns", "exec", p.netns, sys.executable, "-m",
                "fastpath.proxy.demo_backend", p.name, str(p.ip), str(BACKEND_PORT)],
               str(base / f"backend-{p.name}.log"))
        started.append(f"backend {p.name} {p.ip}:{BACKEND_PORT}")
    return backends, started


def probe_all(c, vip: str, port: int, wrap: list[str], backends) -> list[dict]:
    """From every pod: the VIP answers with the name of one of `backends`."""
    reached = []
    for p in c.pods:
        ans = _probe(p.netns, vip, port, wrap)
        reached.append({"pod": p.name, "node": p.node, "answer": ans,
                        "ok": any(ans.startswith(b.name + " ") for b in backends)})
    return reached
