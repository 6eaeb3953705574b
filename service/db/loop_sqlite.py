"""SQLite statements run directly on the event loop (the embedded mode's job-status read and job create).

Why it exists: from an async endpoint, a synchronous SQLAlchemy call costs a threadpool hop (a queue
put, a thread wake-up, a self-pipe write to wake the event loop, a GIL hand-off) that on a small box
costs more CPU than reading one row of a local SQLite file (tens of µs). Running such statements on the
loop is safe only if they can never wait, so:

- each thread (each event loop) gets its own sqlite3 connection, used by nothing else;
- the database is in WAL mode, where readers never wait for the writer;
- the busy timeout is 0: a statement that would have to wait for a lock raises :class:`Busy` at once,
  and the caller takes the threadpool path instead (the same statements, with the engine's long busy
  timeout), so a locked database never stalls the loop and never answers "database is locked";
- writes take the API's in-process write lock without blocking (or raise Busy), then
  ``BEGIN IMMEDIATE``, so the loop's transactions never interleave with the API's threads' writes.

Checkpoints (copying the WAL back into the database file, with fsyncs) are left to threads: this
connection never checkpoints automatically; every ``checkpoint_every`` commits the caller is told to
run one in a thread (:meth:`LoopSqlite.commit` returns True).

>>> db = LoopSqlite("/tmp/lowbit.db", write_lock=threading.Lock())  # doctest: +SKIP
>>> db.fetch_one(prepared, {"job_id": "..."})  # doctest: +SKIP
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from service.db.prepared import Prepared
from service.errors import DatabaseUnavailableError

_CHECKPOINT_EVERY = (
    500  # loop commits between two passive checkpoints (the default autocheckpoint is 1000 pages)
)


class Busy(Exception):
    """The statement would have had to wait for a lock (another writer, a checkpoint, a recovery)."""


class LoopSqlite:
    """Per-thread sqlite3 connections to ``path`` that never wait (see the module docstring)."""

    def __init__(
        self, path: str, write_lock: AbstractContextManager[Any], checkpoint_every: int = _CHECKPOINT_EVERY
    ) -> None:
        self.path = path
        self.write_lock = write_lock
        self.checkpoint_every = checkpoint_every
        self._local = threading.local()
        self._commits = 0

    def fetch_one(self, query: Prepared, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``query`` (processed by its column types), or None; :class:`Busy` if locked."""
        try:
            # fetchall: the statement runs to its end, so no read transaction stays open on the connection.
            rows = self._conn().execute(query.sql, query.params(values)).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        return query.row(rows[0]) if rows else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (ROLLBACK on error) on this thread's connection.

        Raises Busy before running anything when another writer holds the lock. The body must not await:
        the transaction has to end before another coroutine may use the connection."""
        acquire = getattr(self.write_lock, "acquire", None)
        if acquire is not None and not acquire(blocking=False):
            raise Busy("another writer of this process holds the write lock")
        try:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            try:
                yield conn
                conn.commit()
            except BaseException as exc:
                if conn.in_transaction:
                    conn.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise
            self._commits += 1
        finally:
            if acquire is not None:
                self.write_lock.__exit__(None, None, None)

    def checkpoint_due(self) -> bool:
        """True once every ``checkpoint_every`` loop commits: the caller should checkpoint in a thread."""
        if self._commits >= self.checkpoint_every:
            self._commits = 0
            return True
        return False

    def close(self) -> None:
        """Close the calling thread's connection (application shutdown, on the loop's thread)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit (isolation_level=None): reads open no transaction; writes BEGIN explicitly.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.close()
                raise Busy("the database is not in WAL mode; readers could wait for writers")
            self._local.conn = conn
        return conn


def _translate(exc: sqlite3.Error) -> Exception:
    # SQLITE_BUSY / SQLITE_LOCKED: retried off the loop. Anything else is what SQLAlchemy's error
    # handler would have answered 503 for (raw sqlite3 errors never reach that handler).
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return Busy(str(exc))
    return DatabaseUnavailableError("the database failed; retry later")
