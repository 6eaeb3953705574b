"""Engine and session factory built from Settings (PostgreSQL or SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.db.liveness import check_on_checkout
from service.jobs.finite_json import dumps_finite
from service.settings import Settings

# Connections kept open. Under load a QueuePool closes every connection beyond this on its return, so
# a pool smaller than the requests in flight reconnects constantly (a PostgreSQL backend start, TLS
# negotiation): sized for the API's concurrent writers, which the API caps at this number.
POOL_SIZE = 20


def make_engine(settings: Settings) -> Engine:
    """An Engine for ``settings.database_url``; SQLite gets WAL, foreign keys and a busy timeout."""
    url = settings.database_url
    # JSON columns never receive NaN/Infinity (PostgreSQL's json type refuses them; see finite_json).
    # No pool_pre_ping: its SELECT 1 per checkout costs a round trip; the checkout check does not.
    kwargs: dict[str, Any] = {"pool_pre_ping": False, "json_serializer": dumps_finite}
    if settings.is_sqlite:
        path = url.split("///", 1)[-1]
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if path and path != ":memory:":  # a file: QueuePool (":memory:" gets a pool of its own kind)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs.update(pool_size=POOL_SIZE, max_overflow=10)
    else:
        kwargs.update(pool_size=POOL_SIZE, max_overflow=10)
    engine = create_engine(url, **kwargs)
    if not settings.is_sqlite:
        check_on_checkout(engine)  # a PostgreSQL restart costs no failed request (service/db/liveness.py)
    if settings.is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (responses are built after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
