"""A small pool of asyncio psycopg connections (PostgreSQL only) for the API's hottest statements
(the job-status read and the job create, see service.db.repositories.jobs_loop).

Why it exists: a synchronous SQLAlchemy read from an async endpoint needs a threadpool hop (a queue
put, a thread wake-up, a self-pipe write to wake the event loop, a GIL hand-off). On the loaded 2-core
API box that hop cost as much CPU as the query itself. An async psycopg connection awaits PostgreSQL on
the event loop instead, and skips SQLAlchemy's per-statement work for a query compiled once.

Connections are autocommit (a lone SELECT needs no transaction, so no BEGIN/ROLLBACK round trips) and
belong to the event loop that opened them: a pool used from another loop (tests that run the app in
several loops) drops them and opens new ones. A connection whose query failed or was cancelled midway
is closed, never reused.

>>> pool = AsyncPgPool.for_engine(engine, size=10)  # doctest: +SKIP
>>> row = await pool.fetch_one("SELECT 1 AS one", {})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Engine

from service.db.liveness import connection_gone
from service.errors import DatabaseUnavailableError, InvalidInputError

_Conn = psycopg.AsyncConnection[dict[str, Any]]
_DATA_ERROR = "a value is out of range or holds characters that cannot be stored"


class AsyncPgPool:
    """At most ``size`` autocommit connections made with ``connect_kwargs``, opened on first use."""

    def __init__(self, connect_kwargs: Mapping[str, Any], size: int) -> None:
        self.connect_kwargs, self.size = dict(connect_kwargs), size
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(size)

    @classmethod
    def for_engine(cls, engine: Engine, size: int) -> AsyncPgPool:
        """A pool to the database of a ``postgresql+psycopg`` engine (same host, user, options)."""
        _, kwargs = engine.dialect.create_connect_args(engine.url)
        return cls(kwargs, size)

    async def fetch_one(self, query: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``query`` (psycopg ``%(name)s`` placeholders) as a dict, or None.

        DatabaseUnavailableError (503) when PostgreSQL cannot be reached or the query fails."""
        self._bind_loop()
        async with self._slots:
            conn = await self._checkout()
            try:
                cur = await conn.execute(query, params)
                row = await cur.fetchone()
            except BaseException as exc:
                conn.pgconn.finish()  # mid-query state unknown (error or cancellation): never reuse
                if isinstance(exc, psycopg.DataError):  # the caller's value, as for SQLAlchemy's DataError
                    raise InvalidInputError(_DATA_ERROR) from exc
                if isinstance(exc, psycopg.Error):
                    raise DatabaseUnavailableError("the database failed; retry later") from exc
                raise
            self._idle.append(conn)
            return row

    async def _checkout(self) -> _Conn:
        # An idle connection the server closed (a PostgreSQL restart) is dropped, never used: the
        # restart then costs no failed request (service/db/liveness.py).
        while self._idle:
            conn = self._idle.pop()
            if not connection_gone(conn):
                return conn
            conn.pgconn.finish()
        return await self._connect()

    def close(self) -> None:
        """Close the idle connections (application shutdown)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop's connections cannot be awaited here; their sockets are closed directly.
            self.close()
            self._loop, self._slots = loop, asyncio.Semaphore(self.size)

    async def _connect(self) -> _Conn:
        try:
            return await psycopg.AsyncConnection.connect(
                **self.connect_kwargs, autocommit=True, row_factory=dict_row
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailableError("the database is unreachable; retry later") from exc
