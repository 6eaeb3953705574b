"""Liveness, readiness (database, broker, storage) and Prometheus metrics."""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.api.context import AppContext, app_context
from service.errors import NotFoundError
from service.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _check_broker(settings: Settings) -> None:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    elif url.startswith("filesystem://"):
        folder = Path(settings.broker_folder)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".readyz"
        probe.write_bytes(b"ok")
        probe.unlink()
    # sqla+ brokers live in the database checked above.


def _check_database(ctx: AppContext) -> None:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/readyz")
def readyz(ctx: AppContext = Depends(app_context)) -> JSONResponse:
    """200 when the database, the broker and the object store answer; 503 naming the failures."""
    checks: dict[str, str] = {}
    probes = {
        "database": lambda: _check_database(ctx),
        "broker": lambda: _check_broker(ctx.settings),
        "storage": ctx.store.check,
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, ctx: AppContext = Depends(app_context)) -> Response:
    """Prometheus metrics, for scrapers the settings admit (see ``metrics_allowed``); 404 for others."""
    if not metrics_allowed(ctx.settings, request.client.host if request.client else None,
                           request.headers.get("authorization", "")):  # fmt: skip
        raise NotFoundError("not found")
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)


def metrics_allowed(settings: Settings, client: str | None, authorization: str) -> bool:
    """Whether a scrape from ``client`` may read /metrics: a matching ``LOWBIT_METRICS_TOKEN`` bearer
    token, or a client address inside ``LOWBIT_METRICS_ALLOWED_NETWORKS`` (private networks and loopback
    by default: in-cluster scrapers, not the internet)."""
    if settings.metrics_token:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), settings.metrics_token):
            return True
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    networks = [n.strip() for n in settings.metrics_allowed_networks.split(",") if n.strip()]
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)
