import multiprocessing as mp

from fastpath import state


def _bump(n: int) -> None:
    conn = state.connect()
    for _ in range(n):
        with state.transaction(conn):
            (v,) = conn.execute("SELECT v FROM counter").fetchone()
            conn.execute("UPDATE counter SET v=?", (v + 1,))


def test_state_dir_from_env(state_dir):
    assert state.db_path() == state_dir / "state.db"
    conn = state.connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_is_created_once():
    conn = state.connect()
    ddl = "CREATE TABLE IF NOT EXISTS t (a INTEGER); CREATE INDEX IF NOT EXISTS ti ON t(a)"
    state.ensure_schema(conn, "demo", 1, ddl)
    state.ensure_schema(conn, "demo", 1, ddl)
    assert conn.execute("SELECT version FROM schema_versions WHERE owner='demo'").fetchone()[0] == 1


def test_immediate_transactions_serialize_processes():
    conn = state.connect()
    conn.execute("CREATE TABLE counter (v INTEGER)")
    conn.execute("INSERT INTO counter VALUES (0)")
    procs = [mp.get_context("fork").Process(target=_bump, args=(50,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert conn.execute("SELECT v FROM counter").fetchone()[0] == 200
