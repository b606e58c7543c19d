"""The embedded datastore: the KvStore seam on one SQLite file, for one machine.

Several processes share the file (every agent of the demo, the CLI): WAL lets readers
run beside the one writer, and each write takes the lock up front (BEGIN IMMEDIATE), so
a read-check-write such as `create` is atomic across processes.

How it gives etcd's model without a server:
- `meta.revision` is the store's counter; every change bumps it and appends a row to
  `changes` (the watch history); `changes` keeps the last HISTORY rows and
  `meta.compacted` says what went, so an old watch gets Compacted, as etcd's does.
- Leases expire by wall-clock time (the file outlives a reboot, a monotonic clock does
  not). Nobody runs a timer: whoever reads or writes first after the expiry deletes the
  lease's keys, with delete events, in one transaction. Watchers look every
  EXPIRY_CHECK, so a live agent is always around to do it.
- A watch sleeps on inotify over the database's directory (kernel.inotify) and reads
  `changes` (indexed by revision) when a file there changed, or at least every
  EXPIRY_CHECK for leases that ran out; an idle watcher costs a few wake-ups a second.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from fastpath.cluster.kv import Compacted, DatastoreError, Event, KeyValue, KvStore, Watch
from fastpath.kernel.inotify import DirWatch
from fastpath.state import BUSY_TIMEOUT_MS

EXPIRY_CHECK = 0.25   # seconds between a watcher's checks for expired leases
HOT_POLL = 0.002      # after a file event, look this often ...
HOT_WINDOW = 0.05     # ... for this long
HISTORY = 10_000
DDL = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
  create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS changes (rev INTEGER PRIMARY KEY, key TEXT NOT NULL,
  kind TEXT NOT NULL, value BLOB);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,
  expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0)
"""


class SqliteKv(KvStore):
    def __init__(self, path: str | Path, *, history: int = HISTORY) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        self.history = history
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                        isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            with self._write():
                for stmt in filter(None, (s.strip() for s in DDL.split(";"))):
                    self.conn.execute(stmt)
        except (OSError, sqlite3.Error) as e:
            raise DatastoreError(str(e), op=f"open datastore {self.path}") from e
        # one connection per store object; the agent's threads take turns on it
        self.lock = threading.RLock()

    # ---- transactions ------------------------------------------------------------------

    def _write(self):
        return _Txn(self.conn)

    def _bump(self) -> int:
        rev = self.conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0] + 1
        self.conn.execute("UPDATE meta SET value=? WHERE name='revision'", (rev,))
        return rev

    def _log(self, rev: int, key: str, kind: str, value: bytes | None) -> None:
        self.conn.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (rev, key, kind, value))
        if rev % max(1, self.history // 10) == 0 and rev > self.history:
            cut = rev - self.history
            self.conn.execute("DELETE FROM changes WHERE rev <= ?", (cut,))
            self.conn.execute("UPDATE meta SET value=? WHERE name='compacted'", (cut,))

    def _set(self, key: str, value: bytes, lease: int) -> int:
        if lease and not self.conn.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone():
            raise DatastoreError(f"lease {lease:x} not found (expired or revoked)",
                                 op=f"put {key}")
        rev = self._bump()
        row = self.conn.execute("SELECT create_rev FROM kv WHERE key=?", (key,)).fetchone()
        self.conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                          (key, value, row[0] if row else rev, rev, lease))
        self._log(rev, key, "put", value)
        return rev

    def _del(self, key: str) -> None:
        rev = self._bump()
        self.conn.execute("DELETE FROM kv WHERE key=?", (key,))
        self._log(rev, key, "delete", None)

    def _expire(self) -> None:
        """Delete expired leases and their keys (a cheap read first: the write lock is
        taken only when something expired)."""
        now = time.time()
        if not self.conn.execute("SELECT 1 FROM leases WHERE expires < ? LIMIT 1", (now,)).fetchone():
            return
        with self._write():
            for (lease,) in self.conn.execute("SELECT id FROM leases WHERE expires < ?", (now,)).fetchall():
                self._drop_lease(lease)

    def _drop_lease(self, lease: int) -> None:
        for (key,) in self.conn.execute("SELECT key FROM kv WHERE lease=? ORDER BY key", (lease,)).fetchall():
            self._del(key)
        self.conn.execute("DELETE FROM leases WHERE id=?", (lease,))

    # ---- the seam ----------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        with self.lock:
            self._expire()
            r = self.conn.execute("SELECT * FROM kv WHERE key=?", (key,)).fetchone()
        return _kv(r) if r else None

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self.lock:
            self._expire()
            with _Txn(self.conn, immediate=False):  # one snapshot for rows and revision
                rows = self.conn.execute("SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                                         (prefix, _end(prefix))).fetchall()
                rev = self._revision()
        return [_kv(r) for r in rows], rev

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        with self.lock:
            self._expire()
            with self._write():
                return self._set(key, value, lease)

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        with self.lock:
            self._expire()
            with self._write():
                if self.conn.execute("SELECT 1 FROM kv WHERE key=?", (key,)).fetchone():
                    return False
                self._set(key, value, lease)
                return True

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        with self.lock:
            self._expire()
            with self._write():
                r = self.conn.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
                if not r or r[0] != mod_revision:
                    return False
                self._set(key, value, lease)
                return True

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self.lock:
            self._expire()
            with self._write():
                r = self.conn.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
                if not r or (mod_revision is not None and r[0] != mod_revision):
                    return False
                self._del(key)
                return True

    def grant(self, ttl: int) -> int:
        with self.lock, self._write():
            # random ids, as etcd's: a restarted holder never mistakes an old lease for its own
            while True:
                lease = int.from_bytes(os.urandom(7), "little") or 1
                if not self.conn.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone():
                    break
            self.conn.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, time.time() + ttl))
            return lease

    def keepalive(self, lease: int) -> int:
        with self.lock:
            self._expire()
            with self._write():
                r = self.conn.execute("SELECT ttl FROM leases WHERE id=?", (lease,)).fetchone()
                if not r:
                    return 0
                self.conn.execute("UPDATE leases SET expires=? WHERE id=?", (time.time() + r[0], lease))
                return int(r[0])

    def revoke(self, lease: int) -> None:
        with self.lock, self._write():
            self._drop_lease(lease)

    def revision(self) -> int:
        with self.lock:
            return self._revision()

    def _revision(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0])

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _SqliteWatch(SqliteKv(self.path, history=self.history), prefix, start_revision)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class _SqliteWatch(Watch):
    """Polls the change log on its own connection (a watch lives in its own thread)."""

    def __init__(self, store: SqliteKv, prefix: str, start: int) -> None:
        self.store = store
        self.prefix = prefix
        self.next_rev = max(1, start)
        self.data_version = -1
        self.next_expiry = 0.0
        self.notify = DirWatch(store.path.parent)
        self.hot_until = 0.0

    def next(self, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        s = self.store
        while True:
            now = time.monotonic()
            with s.lock:
                # PRAGMA data_version changes only when another connection commits: an idle
                # watcher costs one statement per poll, and a lease check a few times a second
                version = s.conn.execute("PRAGMA data_version").fetchone()[0]
                if version == self.data_version and now < self.next_expiry:
                    rows: list = []
                else:
                    if now >= self.next_expiry:
                        s._expire()
                        self.next_expiry = now + EXPIRY_CHECK
                    self.data_version = s.conn.execute("PRAGMA data_version").fetchone()[0]
                    with _Txn(s.conn, immediate=False):  # one snapshot: rows, then revision
                        rows, compacted = self._read(s)
            if rows:
                self.next_rev = rows[-1][0] + 1
                return [Event(kind=r[2], key=r[1], value=r[3], revision=r[0]) for r in rows]
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return []
            nap = min(left, max(0.0, self.next_expiry - now))
            if now < self.hot_until:
                nap = min(nap, HOT_POLL)
            if self.notify.wait(nap):
                # a write wakes us before its commit is visible: SQLite publishes a commit
                # in the mmapped -shm index last, which inotify cannot see; look again
                # shortly for a while before sleeping long
                self.hot_until = time.monotonic() + HOT_WINDOW

    def _read(self, s: SqliteKv) -> tuple[list, int]:
        compacted = s.conn.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()[0]
        if self.next_rev <= compacted:
            raise Compacted(self.next_rev, compacted + 1)
        rows = s.conn.execute(
            "SELECT rev, key, kind, value FROM changes WHERE rev >= ? AND key >= ? AND key < ?"
            " ORDER BY rev LIMIT 1000", (self.next_rev, self.prefix, _end(self.prefix))).fetchall()
        if not rows:  # nothing under the prefix: skip the revisions seen
            self.next_rev = max(self.next_rev, s._revision() + 1)
        return rows, compacted

    def close(self) -> None:
        self.notify.close()
        self.store.close()


class _Txn:
    def __init__(self, conn: sqlite3.Connection, immediate: bool = True) -> None:
        self.conn = conn
        self.immediate = immediate
        self.nested = False

    def __enter__(self):
        self.nested = self.conn.in_transaction
        if not self.nested:
            self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.conn

    def __exit__(self, et, ev, tb) -> None:
        if self.nested:
            return
        self.conn.execute("ROLLBACK" if et else "COMMIT")


def _end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


def _kv(r) -> KeyValue:
    return KeyValue(key=r[0], value=bytes(r[1]), create_revision=r[2], mod_revision=r[3], lease=r[4])
