"""The event loop's SQLite connection: it never waits (Busy instead), reads beside a writer, rolls back."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, column, select, table

from service.db.loop_sqlite import Busy, LoopSqlite
from service.db.prepared import Prepared, sqlite_named

ROWS = Prepared.compile(select(column("x")).select_from(table("t")).order_by(column("x")), sqlite_named())


@pytest.fixture
def path(tmp_path: Path) -> str:
    file = str(tmp_path / "loop.db")
    conn = sqlite3.connect(file)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return file


def test_reads_beside_a_writer_and_writes_raise_busy_at_once(path: str) -> None:
    """Given another connection in a write transaction, the loop's read sees the committed rows at once
    and its write raises Busy at once (writing nothing); once the writer commits, writes go through."""
    db = LoopSqlite(path, threading.Lock())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (2)")
    assert db.fetch_one(ROWS, {}) == {"x": 1}
    with pytest.raises(Busy), db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    other.execute("COMMIT")
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (4)")
    assert [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 4]
    db.close()


def test_the_process_write_lock_is_taken_without_waiting(path: str) -> None:
    lock = threading.Lock()
    db = LoopSqlite(path, lock)
    with lock, pytest.raises(Busy), db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    with db.transaction() as conn:  # released by the failed attempt
        conn.execute("INSERT INTO t VALUES (3)")
    assert not lock.locked()
    three: Select[Any] = select(column("x")).select_from(table("t")).where(column("x") == 3)
    assert db.fetch_one(Prepared.compile(three, sqlite_named()), {}) == {"x": 3}


def test_an_error_rolls_back_and_the_connection_stays_usable(path: str) -> None:
    db = LoopSqlite(path, threading.Lock())
    with pytest.raises(ZeroDivisionError), db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (2)")
        _ = 1 / 0
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT x FROM t ORDER BY x")] == [1, 3]


def test_one_connection_per_thread_and_checkpoints_left_to_the_caller(path: str) -> None:
    db = LoopSqlite(path, threading.Lock(), checkpoint_every=2)
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(id(db._conn())))
    thread.start()
    thread.join()
    assert seen and seen[0] != id(db._conn())
    assert db._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    due = []
    for value in range(5):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
        due.append(db.checkpoint_due())
    assert due == [False, True, False, True, False]


def test_a_database_not_in_wal_mode_is_refused(tmp_path: Path) -> None:
    file = str(tmp_path / "rollback-journal.db")
    sqlite3.connect(file).execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(Busy):
        LoopSqlite(file, threading.Lock()).fetch_one(ROWS, {})
