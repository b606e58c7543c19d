"""`fastpath down` for BGP: stop every BIRD of this instance and remove its files.

BIRDs are found three ways, so that a crash or a lost state dir leaves nothing running:
the pid files in this instance's BIRD directory, any `bird` whose control socket lies in
that directory, and any `bird` living in one of this instance's network namespaces
(fp-<tag>-..., compared by the namespace's inode). Idempotent.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

from fastpath import naming
from fastpath.bgp import bird, store
from fastpath.errors import FastpathError


def _netns_inodes() -> set[tuple[int, int]]:
    out = set()
    if os.path.isdir("/run/netns"):
        for n in os.listdir("/run/netns"):
            if naming.owned(n):
                try:
                    st = os.stat(f"/run/netns/{n}")
                    out.add((st.st_dev, st.st_ino))
                except OSError:
                    pass
    return out


def _birds() -> list[tuple[int, list[bytes]]]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"bird":
            out.append((int(d), argv))
    return out


def sweep() -> list[str]:

    removed = []
    d = bird.bgp_dir()
    dir_b = os.fsencode(str(d)) + b"/"
    netns = _netns_inodes()
    victims = set()
    if d.is_dir():
        for f in d.glob("*.pid"):
            pid = bird.running_pid(f.stem)
            if pid:
                victims.add(pid)
    for pid, argv in _birds():
        if any(a.startswith(dir_b) for a in argv):
            victims.add(pid)
            continue
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in netns:
            victims.add(pid)
    for pid in sorted(victims):
        bird.kill_pid(pid, None)
        removed.append(f"bird pid {pid}")
    if d.is_dir():
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"bird files {d}")
    try:
        if bird.state.db_path().exists():
            store.forget()
    except (FastpathError, sqlite3.Error):  # unreadable state: the BIRDs are gone anyway
        pass
    return removed
