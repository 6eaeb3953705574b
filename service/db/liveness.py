"""A zero-round-trip check that a pooled PostgreSQL connection is still alive, for every checkout.

An idle connection's socket has nothing to read, unless the server has said goodbye: a restart or a
terminated backend sends a FATAL message and closes the socket, which then reads as ready. Looking at
the socket (``select`` with a zero timeout) finds those connections before a request uses one, so a
PostgreSQL restart costs no failed request, without ``pool_pre_ping``'s ``SELECT 1`` round trip on
every checkout. A peer that vanished without closing (a cut network) is not seen here; the query on
it fails and SQLAlchemy invalidates the pool as before.
"""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy import Engine, event, exc


def socket_says_goodbye(fd: int) -> bool:
    """True when the idle connection on ``fd`` has data or EOF waiting (the server closed it)."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):  # closed or invalid descriptor
        return True
    return bool(readable)


def connection_gone(dbapi_conn: Any) -> bool:
    """Whether a psycopg (3) connection sitting in a pool is dead (closed, broken, or told to go)."""
    try:
        if dbapi_conn.closed or dbapi_conn.broken:
            return True
        return socket_says_goodbye(dbapi_conn.pgconn.socket)
    except Exception:  # psycopg raises on a finished pgconn's socket
        return True


def check_on_checkout(engine: Engine) -> None:
    """Have ``engine``'s pool replace a dead connection at checkout (PostgreSQL engines)."""

    @event.listens_for(engine, "checkout")
    def _checked(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if connection_gone(dbapi_conn):
            # The pool discards this connection and checks out a fresh one (SQLAlchemy's documented
            # pessimistic-disconnect hook).
            raise exc.DisconnectionError("pooled connection closed by the server")
