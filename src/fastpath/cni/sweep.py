"""`fastpath down` for the CNI side: stop this instance's agents, remove their sockets, and
drop the attachments the plugin recorded (their host links, when they live in the
namespace `down` runs in; pod namespaces belong to the runtime and are left alone).

Agents are found by name, not only through state: every socket under /run/fastpath whose
name is in the instance scope (`fp-<tag>-agent.sock`), with the pid from its pidfile or,
when the pidfile is gone, from the listening socket's peer credentials.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from fastpath import naming, state
from fastpath.cni.agent import peer_cred
from fastpath.cni.store import Store

RUN_DIR = "/run/fastpath"
STOP_TIMEOUT = 3.0


def _agent_pid(sock_path: str) -> int | None:
    try:
        with open(sock_path + ".pid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock_path)
        return peer_cred(s)[0]
    except OSError:
        return None
    finally:
        s.close()


def _is_agent(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"agent" in argv and any(b"fastpath" in a for a in argv)


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def sweep() -> list[str]:
    removed: list[str] = []
    scope = naming.scope()
    if os.path.isdir(RUN_DIR):
        for entry in sorted(os.listdir(RUN_DIR)):
            if not (entry.startswith(scope) and entry.endswith(".sock")):
                continue
            path = os.path.join(RUN_DIR, entry)
            pid = _agent_pid(path)
            if pid and _is_agent(pid):
                try:
                    _stop(pid)
                    removed.append(f"agent pid {pid}")
                except ProcessLookupError:
                    pass
            for p in (path, path + ".pid"):
                try:
                    os.unlink(p)
                    removed.append(p)
                except FileNotFoundError:
                    pass
    if state.db_path().exists():
        conn = state.connect()
        if Store.exists(conn):
            removed += Store(conn).sweep()
    return removed
