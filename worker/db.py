"""The worker's database access: one engine per process (created after fork), retried transactions.

Every write of the worker runs in :meth:`WorkerDb.write`, which retries the whole transaction when the
connection breaks (a PostgreSQL restart) for ``db_retry_s`` seconds, so a job survives a database
restart instead of failing on its next progress write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.db.session import make_engine, make_sessionmaker
from service.settings import Settings
from worker.retry import retry_call
from worker.settings import WorkerSettings

T = TypeVar("T")
IDLE_IN_TRANSACTION_S = 10.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _limit_idle_transactions(engine: Engine) -> None:
    """A worker frozen (SIGSTOP, a suspended VM) inside one of its short transactions would hold the
    job's row lock, and block the reconciler and the next claim, for as long as it stays frozen: the
    server ends such a session after IDLE_IN_TRANSACTION_S instead."""

    @event.listens_for(engine, "connect")
    def _set_timeout(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TRANSACTION_S * 1000)}")
        dbapi_conn.commit()


class _Transient(Exception):
    pass


class WorkerDb:
    """Sessions for one process; the engine is rebuilt when the process id changes (prefork children)."""

    def __init__(self, settings: Settings, wsettings: WorkerSettings) -> None:
        self.settings = settings
        self.wsettings = wsettings
        self._pid = -1
        self._engine: Engine | None = None
        self._factory: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        """This process's engine (a forked child never reuses its parent's connections)."""
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = make_engine(self.settings)
            if not self.settings.is_sqlite:
                _limit_idle_transactions(self._engine)
            self._factory = make_sessionmaker(self._engine)
            self._pid = os.getpid()
        return self._engine

    def session(self) -> Session:
        """A new session (caller closes it)."""
        _ = self.engine
        assert self._factory is not None  # set together with the engine
        return self._factory()

    def write(self, fn: Callable[[Session], T], what: str) -> T:
        """Run ``fn(session)`` in a transaction and commit; retried while the database is unreachable."""

        def attempt() -> T:
            session = self.session()
            try:
                result = fn(session)
                session.commit()
                return result
            except DBAPIError as exc:
                with contextlib.suppress(Exception):  # the connection may already be gone
                    session.rollback()
                if _transient(exc):
                    raise _Transient(str(exc).splitlines()[0]) from exc
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    session.rollback()
                raise
            finally:
                session.close()

        return retry_call(
            attempt,
            what=f"database write ({what})",
            retry_on=(_Transient,),
            total_s=self.wsettings.db_retry_s,
            base_s=self.wsettings.retry_base_s,
        )
