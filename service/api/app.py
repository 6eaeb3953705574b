"""The FastAPI application factory.

>>> from service.settings import Settings
>>> app = create_app(Settings(database_url="sqlite:///:memory:"))  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service.api import errors
from service.api.auth_throttle import AuthFailures
from service.api.cache_metrics import StatusCacheCollector
from service.api.context import AppContext
from service.api.hot_lane import HotLane
from service.api.job_metrics import JobsCollector
from service.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.api.ratelimit import TokenBuckets
from service.api.request_id import RequestIdMiddleware
from service.api.routes import datasets, docs, health, jobs, models, objects, schedules, uploads
from service.dashboard import make_router as dashboard_router
from service.db.async_pg import AsyncPgPool
from service.db.loop_sqlite import LoopSqlite
from service.db.session import make_engine, make_sessionmaker
from service.db.status_cache import JobStatusCache
from service.settings import Settings, get_settings
from service.storage import make_store

# Event-loop connections for the job-status read and job create (PostgreSQL), besides the SQLAlchemy pool's.
_ASYNC_CONNECTIONS = 10


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured API: routes, error handlers, body limit, metrics. The schema must be migrated."""
    settings = settings or get_settings()
    engine = make_engine(settings)
    registry = CollectorRegistry()
    registry.register(JobsCollector(engine))  # job, queue and worker series, read at scrape time

    write_lock: AbstractContextManager[Any] = threading.Lock() if settings.is_sqlite else nullcontext()
    pg_loop = None if settings.is_sqlite else AsyncPgPool.for_engine(engine, size=_ASYNC_CONNECTIONS)
    sqlite_file = engine.url.database if settings.is_sqlite else None
    # ":memory:" is a new database per connection: only a file can be shared with the loop's connection.
    sqlite_loop = LoopSqlite(sqlite_file, write_lock) if sqlite_file and sqlite_file != ":memory:" else None
    status_cache = None
    if pg_loop is not None and settings.job_status_cache_entries:
        status_cache = JobStatusCache(pg_loop.connect_kwargs, max_entries=settings.job_status_cache_entries)
        registry.register(StatusCacheCollector(status_cache))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if status_cache is not None:
            status_cache.ensure_listening()  # serving starts once LISTEN is in effect
        yield
        engine.dispose()
        if pg_loop is not None:
            pg_loop.close()
        if sqlite_loop is not None:
            sqlite_loop.close()
        if status_cache is not None:
            status_cache.close()

    app = FastAPI(
        lifespan=lifespan,
        title="lowbit",
        version="1",
        description="Model quantization as a service: upload a model and data, run jobs, download results.",
        docs_url=None,  # served by service/api/routes/docs.py from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        store=make_store(settings),
        limiter=TokenBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst),
        auth_failures=AuthFailures(settings.auth_failures_per_minute, settings.auth_failure_burst),
        registry=registry,
        pg_loop=pg_loop,
        sqlite_loop=sqlite_loop,
        status_cache=status_cache,
        write_lock=write_lock,
    )
    errors.install(app)
    # Routes are matched in order, each router's paths scanned in turn: the jobs routes (job-status
    # polling is the busiest request) come first. No two routers share a path prefix.
    for module in (jobs, health, models, datasets, uploads, objects, schedules, docs):
        # The error answers every /v1 route may give are documented once (schemathesis checks them).
        documented = (
            errors.ERROR_RESPONSES if module in (jobs, models, datasets, uploads, schedules) else None
        )
        app.include_router(module.router, responses=documented)
    app.include_router(dashboard_router())
    # Innermost first: the hot lane answers inside the body limit and the request metrics.
    app.add_middleware(HotLane, ctx=app.state.ctx)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_spec_bytes)
    app.add_middleware(MetricsMiddleware, registry=registry)
    app.add_middleware(RequestIdMiddleware)  # outermost: ids every request, writes the access log

    return app
