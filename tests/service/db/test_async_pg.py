"""The asyncio psycopg pool of the job-status read, against the machine's real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from service.db.async_pg import AsyncPgPool
from service.errors import DatabaseUnavailableError, InvalidInputError
from tests.fixtures.postgres import fresh_database

APP = "lowbit-async-pool-test"
# How many of this pool's connections the server sees while the query runs.
SEEN = "SELECT pg_sleep(%(s)s) AS slept, (SELECT count(*) FROM pg_stat_activity WHERE application_name = %(app)s) AS n"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def make_pool(url: str, size: int) -> AsyncPgPool:
    engine = create_engine(url)
    pool = AsyncPgPool.for_engine(engine, size)
    engine.dispose()
    pool.connect_kwargs["application_name"] = APP
    return pool


def test_rows_none_and_bounded_connections(pg_url: str) -> None:
    pool = make_pool(pg_url, size=2)

    async def main() -> None:
        assert await pool.fetch_one("SELECT %(x)s::int AS x", {"x": 7}) == {"x": 7}
        assert await pool.fetch_one("SELECT 1 WHERE false", {}) is None
        rows = await asyncio.gather(*(pool.fetch_one(SEEN, {"s": 0.05, "app": APP}) for _ in range(8)))
        assert all(r is not None and 1 <= r["n"] <= 2 for r in rows), rows

    asyncio.run(main())
    asyncio.run(main())  # a second event loop: the first loop's connections are dropped, not reused
    pool.close()


def test_broken_and_cancelled_connections_are_replaced(pg_url: str) -> None:
    pool = make_pool(pg_url, size=1)

    async def main() -> None:
        pid = await pool.fetch_one("SELECT pg_backend_pid() AS pid", {})
        assert pid is not None
        killer = make_pool(pg_url, size=1)
        await killer.fetch_one("SELECT pg_terminate_backend(%(pid)s)", pid)
        for _ in range(500):  # the backend has exited (its socket is closed) once it leaves pg_stat_activity
            gone = await killer.fetch_one(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %(pid)s", pid
            )
            if gone is not None and gone["n"] == 0:
                break
            await asyncio.sleep(0.01)
        killer.close()
        # The checkout sees the closed socket and replaces the connection: no request fails.
        again = await pool.fetch_one("SELECT pg_backend_pid() AS pid", {})
        assert again is not None and again["pid"] != pid["pid"]

        slow = asyncio.ensure_future(pool.fetch_one("SELECT pg_sleep(30)", {}))
        await asyncio.sleep(0.3)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The cancelled query's connection is gone: the next query answers at once on a new one.
        assert await asyncio.wait_for(pool.fetch_one("SELECT 2 AS two", {}), timeout=5) == {"two": 2}

    asyncio.run(main())
    pool.close()


def test_unreachable_database_is_503() -> None:
    pool = AsyncPgPool({"host": "127.0.0.1", "port": 1, "dbname": "x", "connect_timeout": 2}, size=1)
    with pytest.raises(DatabaseUnavailableError):
        asyncio.run(pool.fetch_one("SELECT 1", {}))


def test_values_the_database_refuses_are_the_callers_422(pg_url: str) -> None:
    """A NUL character in text (PostgreSQL refuses it) is invalid input, as on the SQLAlchemy path."""
    pool = make_pool(pg_url, size=1)

    async def main() -> None:
        with pytest.raises(InvalidInputError):
            await pool.fetch_one("SELECT %(x)s::text AS x", {"x": "a\x00b"})
        assert await pool.fetch_one("SELECT 1 AS one", {}) == {"one": 1}

    asyncio.run(main())
    pool.close()
