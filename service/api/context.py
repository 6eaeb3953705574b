"""Per-application state (settings, DB sessions, store, limiter, metrics) and request dependencies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.api.ratelimit import TokenBuckets
from service.db.repositories import projects
from service.errors import AuthError, InvalidInputError
from service.settings import Settings
from service.storage import ArtifactStore

_AUTH_CACHE_TTL_S = 10.0  # a revoked key stops working within this many seconds


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    limiter: TokenBuckets
    registry: CollectorRegistry
    auth_cache: dict[str, tuple[float, str, str]] = field(default_factory=dict)
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


async def principal(request: Request, ctx: AppContext = Depends(app_context)) -> Principal:
    """Authenticate ``Authorization: Bearer <key>`` and apply the per-key rate limit.

    Keys are cached for a few seconds, so the hot path touches no database and no thread."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(
            "missing API key; send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    cached = ctx.auth_cache.get(token)
    if cached is None or cached[0] < time.monotonic():
        cached = await run_in_threadpool(_authenticate, ctx, token)
        if len(ctx.auth_cache) > 10_000:
            ctx.auth_cache.clear()
        ctx.auth_cache[token] = cached
    who = Principal(project_id=cached[1], key_id=cached[2])
    ctx.limiter.take(who.key_id)
    return who


def _authenticate(ctx: AppContext, token: str) -> tuple[float, str, str]:
    with ctx.sessions() as session:
        key = projects.authenticate(session, token)
        return time.monotonic() + _AUTH_CACHE_TTL_S, key.project_id, key.id


def page_limit(ctx: AppContext, limit: int | None) -> int:
    """The page size to use: ``limit`` within [1, max_page_size], or the default."""
    if limit is None:
        return ctx.settings.default_page_size
    if not 1 <= limit <= ctx.settings.max_page_size:
        raise InvalidInputError(
            f"limit must be between 1 and {ctx.settings.max_page_size}", code="invalid_limit"
        )
    return limit
