"""Pure ASGI middleware (keeps request bodies streaming): request metrics and the JSON body limit."""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Routes whose bodies are uploads (bounded by max_upload_bytes instead of the spec limit).
_UPLOAD_SUFFIXES = ("/content",)
_UPLOAD_PREFIXES = ("/v1/objects/",)


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }, [(b"body", body)]


class BodyLimitMiddleware:
    """Refuse non-upload request bodies over ``limit`` bytes with 413, before anything buffers them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.endswith(_UPLOAD_SUFFIXES) or path.startswith(_UPLOAD_PREFIXES):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(413, self._message)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    @property
    def _message(self) -> str:
        return f"request body over the {self.limit}-byte limit"

    async def _reject(self, send: Send) -> None:
        start, body = _error(413, "payload_too_large", self._message)
        await send(start)
        await send({"type": "http.response.body", "body": body[0][1]})


class _TooLarge(HTTPException):
    # An HTTPException: FastAPI's body reading turns any other exception into a 400 ("error parsing the
    # body"), and passes this one on to the app's 413 handler; outside FastAPI (the hot lane) it reaches
    # the middleware's own 413.
    pass


class MetricsMiddleware:
    """Count requests and time them per route template (not per URL, to keep label sets small)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "lowbit_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "lowbit_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
        )
        # labels() checks and locks on every call: the children are looked up once per label set.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            count = self._counts.get((method, route, status))
            if count is None:
                count = self._counts[method, route, status] = self.requests.labels(method, route, str(status))
            timer = self._timers.get((method, route))
            if timer is None:
                timer = self._timers[method, route] = self.latency.labels(method, route)
            count.inc()
            timer.observe(time.perf_counter() - start)
