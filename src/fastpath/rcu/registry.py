"""Where `fastpath rcu stats` finds the SharedTables and Domains of this instance: a store
of notes, kept apart from the RCU core so that the core does no file I/O.

A memfd has no path, so a process that wants its table (or its Domain's stats page) listed
leaves a small JSON note in the state dir (`<state>/rcu/<kind>-<name>.json`: kind, pid,
fd, size) with `register`, and removes it with `unregister`. Any process allowed to (root,
or the same user) can open the memfd through /proc/<pid>/fd/<fd> (`open_region`) and read
the statistics kept in it (rcu.stats). A note whose process is gone is stale and removed
on the next listing.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from fastpath import state
from fastpath.errors import KernelError, NotFound, UsageError
from fastpath.kernel import proc
from fastpath.kernel.files import atomic_write
from fastpath.shm.memfd import Region

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def table_dir() -> Path:
    return state.state_dir() / "rcu"


def register(name: str, pid: int, fd: int, size: int, kind: str = "table") -> Path:
    if not _NAME_RE.match(name):
        raise UsageError(f"{kind} name {name!r}: use lowercase letters, digits and '-'")
    d = table_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / f"{kind}-{name}.json"
    atomic_write(path, json.dumps({"kind": kind, "name": name, "pid": pid, "fd": fd,
                                   "size": size, "started": time.time()}))
    return path


def unregister(path: Path) -> None:
    try:
        note = json.loads(path.read_text())
        if note.get("pid") == os.getpid():   # a newer writer may own the name by now
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def tables(kind: str | None = None) -> list[dict]:
    """Notes of live tables and domains (or one `kind`), by name; stale notes are removed."""
    d = table_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        try:
            note = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if proc.alive(int(note.get("pid", 0))) and os.path.exists(f"/proc/{note['pid']}/fd/{note['fd']}"):
            if kind is None or note.get("kind", "table") == kind:
                out.append(note)
        else:
            p.unlink(missing_ok=True)
    return out


def open_region(note: dict) -> Region:
    """The memfd a note points at, mapped read-only; the caller closes it."""
    path = f"/proc/{note['pid']}/fd/{note['fd']}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NotFound(f"{note.get('kind', 'table')} {note['name']}: its process "
                       f"(pid {note['pid']}) is gone") from e
    except OSError as e:
        raise KernelError.from_oserror(f"open {path}", e) from e
    try:
        return Region(fd, os.fstat(fd).st_size, writable=False)
    except BaseException:
        os.close(fd)
        raise
