"""Where fastpath keeps its state: one SQLite database (WAL) in the state directory.

The directory is FASTPATH_STATE_DIR, else /var/lib/fastpath; tests point it at a temp
dir. Each package owns its tables and creates them with `ensure_schema`. Writers that
must not race (IPAM allocation, cluster changes) use `transaction(conn)`, which takes the
write lock up front (BEGIN IMMEDIATE) so two processes never both read-then-write.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from fastpath.errors import FastpathError

DEFAULT_STATE_DIR = "/var/lib/fastpath"
DB_NAME = "state.db"
BUSY_TIMEOUT_MS = 10_000


class StateLocked(FastpathError):
    """Another fastpath process holds the state lock for longer than the busy timeout."""


def state_dir() -> Path:
    return Path(os.environ.get("FASTPATH_STATE_DIR") or DEFAULT_STATE_DIR)


def db_path() -> Path:
    return state_dir() / DB_NAME


def connect(path: Path | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the state database in autocommit mode with WAL."""
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True):
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception."""
    try:
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            raise StateLocked("state database is locked by another fastpath process",
                              op=f"lock {db_path()}") from e
        raise
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def ensure_schema(conn: sqlite3.Connection, owner: str, version: int, ddl: str) -> None:
    """Create `owner`'s tables once per schema version.

    `ddl` is idempotent SQL (CREATE ... IF NOT EXISTS) split on ";": no triggers with inner ";".
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER)")
    row = conn.execute("SELECT version FROM schema_versions WHERE owner=?", (owner,)).fetchone()
    if row and row["version"] >= version:
        return
    with transaction(conn):
        for stmt in filter(None, (s.strip() for s in ddl.split(";"))):
            conn.execute(stmt)
        conn.execute("INSERT OR REPLACE INTO schema_versions (owner, version) VALUES (?, ?)",
                     (owner, version))
