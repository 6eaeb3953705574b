"""Per-application state (settings, DB sessions, store, limiter, metrics) and request dependencies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Annotated, Any

from anyio import CapacityLimiter
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.api.auth_throttle import AuthFailures
from service.api.ratelimit import TokenBuckets
from service.db.async_pg import AsyncPgPool
from service.db.loop_sqlite import LoopSqlite
from service.db.repositories import projects
from service.db.session import POOL_SIZE
from service.db.status_cache import JobStatusCache
from service.errors import AuthError, InvalidInputError
from service.settings import Settings
from service.storage import ArtifactStore

_AUTH_CACHE_TTL_S = 10.0  # a revoked key stops working within this many seconds
_AUTH_CACHE_SIZE = 10_000  # keys verified per process; the oldest verification makes room
# Scope key set by service.api.hot_lane to the key id whose rate-limit token it spent on the request,
# so a request it hands on to the routes is not charged twice.
CHARGED = "lowbit.rate_limit_charged"


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    limiter: TokenBuckets
    auth_failures: AuthFailures
    registry: CollectorRegistry
    # The job-status read and the job create run on the event loop, without a thread hop: on
    # PostgreSQL on async connections (service.db.async_pg), on SQLite on the loop's own connection
    # (service.db.loop_sqlite). One of the two is set.
    pg_loop: AsyncPgPool | None = None
    sqlite_loop: LoopSqlite | None = None
    # PostgreSQL: job-status responses cached until the jobs trigger says the row changed.
    status_cache: JobStatusCache | None = None
    auth_cache: dict[str, tuple[float, Principal]] = field(default_factory=dict)  # sha256 -> (expiry, caller)
    # Threads that run creates at once: no more than the pool keeps open (see POOL_SIZE), so bursts
    # queue here on the event loop instead of reconnecting or contending for the GIL in threads.
    writers: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(POOL_SIZE))
    # SQLite allows one writer; queueing creates on a lock here beats SQLite's sleeping busy handler
    # (p99 of concurrent creates dropped several-fold). PostgreSQL needs no lock.
    write_lock: AbstractContextManager[Any] = field(default_factory=nullcontext)


@dataclass(frozen=True)
class Principal:
    """The caller: the project every query is scoped to, and the key used."""

    project_id: str
    key_id: str


async def app_context(request: Request) -> AppContext:
    # async: a plain def dependency would cost a thread hop on every request.
    ctx: AppContext = request.app.state.ctx
    return ctx


def db_session(ctx: AppContext = Depends(app_context)) -> Iterator[Session]:
    """A session for one request; handlers commit what they change."""
    session = ctx.sessions()
    try:
        yield session
    finally:
        session.close()


async def principal(request: Request) -> Principal:
    """Authenticate ``Authorization: Bearer <key>`` and apply the per-key rate limit.

    Verified keys are cached in process for a few seconds, keyed by the key's sha256 (the plaintext is
    not kept), so the hot path touches no database and no thread."""
    # The context comes from the app, not from a sub-dependency: every authenticated request runs this.
    ctx: AppContext = request.app.state.ctx
    token = _bearer_token(request.headers.get("authorization", ""))
    if token is None:
        raise AuthError(
            "missing API key; send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    digest = projects.hash_key(token)
    who = _verified(ctx, digest)
    if who is None:
        client = request.client.host if request.client else "unknown"
        ctx.auth_failures.check(client)
        try:
            cached = await run_in_threadpool(_authenticate, ctx, token)
        except AuthError:
            ctx.auth_failures.failed(client)
            raise
        ctx.auth_cache.pop(digest, None)
        if len(ctx.auth_cache) >= _AUTH_CACHE_SIZE:
            del ctx.auth_cache[next(iter(ctx.auth_cache))]  # the oldest verification
        ctx.auth_cache[digest] = cached
        who = cached[1]
    if request.scope.get(CHARGED) != who.key_id:  # the hot lane may have spent this request's token
        ctx.limiter.take(who.key_id)
    return who


def verified_caller(ctx: AppContext, header: str) -> Principal | None:
    """The caller of an ``Authorization`` header whose key was verified within the cache's lifetime;
    None when it was not (or the header is malformed): :func:`principal` then decides. No rate limit."""
    token = _bearer_token(header)
    return None if token is None else _verified(ctx, projects.hash_key(token))


def _bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _verified(ctx: AppContext, digest: str) -> Principal | None:
    cached = ctx.auth_cache.get(digest)
    return None if cached is None or cached[0] < time.monotonic() else cached[1]


def _authenticate(ctx: AppContext, token: str) -> tuple[float, Principal]:
    with ctx.sessions() as session:
        key = projects.authenticate(session, token)
        return time.monotonic() + _AUTH_CACHE_TTL_S, Principal(project_id=key.project_id, key_id=key.id)


# The page-size query parameter; its documented bounds are the default settings' (page_limit enforces
# the running server's, answering invalid_limit).
PageLimit = Annotated[
    int | None,
    Query(
        description="page size; default: the server's default_page_size",
        json_schema_extra={"minimum": 1, "maximum": Settings.model_fields["max_page_size"].default},
    ),
]


def page_limit(ctx: AppContext, limit: int | None) -> int:
    """The page size to use: ``limit`` within [1, max_page_size], or the default."""
    if limit is None:
        return ctx.settings.default_page_size
    if not 1 <= limit <= ctx.settings.max_page_size:
        raise InvalidInputError(
            f"limit must be between 1 and {ctx.settings.max_page_size}", code="invalid_limit"
        )
    return limit
