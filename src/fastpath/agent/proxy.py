"""The node proxy a node agent programs: started once, then fed through an RCU table.

The agent writes its resolved services into a SharedTable (a memfd) and hands the table's
fd to the proxy master over the master's `program.sock` (SCM_RIGHTS). From then on a
change is one publish into the table; the master picks it up between events. There is no
config file and no signal. A restarted agent hands over a fresh table, and the master
switches to it with its workers, listeners and connections untouched.

Service VIPs: each listen address goes on the node's loopback as a /32 labelled `lo:fpvip`,
so the master can bind it and the pods, which route everything through their node, reach
it. Only addresses with that label are ever removed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from fastpath import state
from fastpath.errors import FastpathError, KernelError
from fastpath.kernel import proc
from fastpath.podnet.rtnl import Rtnl
from fastpath.proxy.master import program_socket, run_dir
from fastpath.rcu.table import SharedTable

VIP_LABEL = "lo:fpvip"
START_TIMEOUT = 15.0


def master_pid(name: str) -> int | None:
    try:
        pid = int(json.loads((run_dir(name) / "master.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if proc.alive(pid) else None


def start_master(name: str, workers: int, wrap: list[str] | None = None,
                 drain_timeout: float | None = None) -> int:
    """`fastpath proxy run --program` in a session of its own (it outlives the agent);
    `wrap` prefixes the command (`fastpath accel run --`)."""
    log = state.state_dir() / f"proxy-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log, "ab") as f:
        p = subprocess.Popen([*(wrap or []), sys.executable, "-m", "fastpath", "proxy", "run", "--program",
                              "--name", name,
                              *(["--workers", str(workers)] if workers else []),
                              *(["--drain-timeout", f"{drain_timeout:g}"]
                                if drain_timeout is not None else [])],
                             stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    sock = program_socket(name)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = master_pid(name)
        if sock.exists() and pid is not None:
            return pid   # the wrapper may exec or fork: the master's own record says who runs
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise FastpathError(f"the node proxy did not start (see {log})", op="start the node proxy")


def hand_over(name: str, table: SharedTable) -> None:
    path = program_socket(name)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(5.0)
    try:
        s.connect(str(path))
        socket.send_fds(s, [b"table"], [table.fd])
        if s.recv(16) != b"ok\n":
            raise FastpathError("the proxy master did not take the table", op=f"program proxy {name}")
    except OSError as e:
        raise KernelError.from_oserror(f"hand the service table to proxy {name}", e) from e
    finally:
        s.close()


def vips_in_use(name: str) -> dict[str, int]:
    """VIP -> connections that live workers of the node's proxy still carry on it (their
    status files, refreshed twice a second): a deleted service's VIP stays on the loopback
    while its connections drain, or the clients' packets to it would have no route."""
    out: dict[str, int] = {}
    for f in run_dir(name).glob("worker-*.json"):
        try:
            st = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not proc.alive(int(st.get("pid") or 0)):
            continue
        for s in st.get("services", []):
            if s.get("active") and s.get("listen"):
                ip = str(s["listen"]).rsplit(":", 1)[0]
                out[ip] = out.get(ip, 0) + int(s["active"])
    return out


def sync_vips(want: set[str]) -> tuple[list[str], list[str]]:
    """Make the `lo:fpvip` /32s on the loopback exactly `want`; (added, removed)."""
    added, removed = [], []
    with Rtnl(None) as r:
        lo = r.index("lo")
        have = set()
        for a in r.call("list addresses", "get_addr", family=socket.AF_INET, index=lo):
            if a.get_attr("IFA_LABEL") == VIP_LABEL:
                have.add(a.get_attr("IFA_ADDRESS"))
        for ip in sorted(want - have):
            r.call(f"add VIP {ip}", "addr", "add", index=lo, address=ip, prefixlen=32, label=VIP_LABEL)
            added.append(ip)
        for ip in sorted(have - want):
            r.call(f"remove VIP {ip}", "addr", "del", index=lo, address=ip, prefixlen=32)
            removed.append(ip)
    return added, removed

