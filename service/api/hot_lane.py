"""An ASGI front for the two requests clients send most: ``GET /v1/jobs/{id}`` and ``POST /v1/jobs``.

Why it exists: on a loaded API box FastAPI's per-request machinery (routing through every route,
dependency solving, body validation through its model field, the exit-stack middleware) cost more CPU
than lowbit's own work for these two requests. This lane answers them directly when it can, and hands
every other case to the application unchanged:

- status: the caller's key was verified recently (service.api.context.verified_caller), the rate limit
  lets it through, and the response is in the job-status cache (service.db.status_cache). A miss, an
  unknown or expired key, a limited key: the FastAPI route answers (and refills the cache).
- create: the same caller check, an ``application/json`` body that validates as JobCreate and a well-
  formed Idempotency-Key (if any); then the route's own on-loop create (routes.jobs.create_on_loop).
  Whatever it cannot finish without writing (it answers None) or whatever fails validation goes to the
  route with the body replayed, so errors keep their one wording. Errors the create raises after the
  checks (inputs not ready, a reused key, the database down) are answered here as the app's handlers
  would: nothing may run the create a second time.

The responses are the routes' own (same bytes, same headers); the request metrics see the route
template, as for routed requests. OpenAPI still documents the routes, which remain the reference.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.context import CHARGED, AppContext, Principal, verified_caller
from service.api.errors import error_response
from service.api.idempotency import IdempotencyContext, fingerprint, valid_key
from service.api.routes.jobs import create_on_loop
from service.db.status_cache import JobStatusCache
from service.errors import RateLimitedError, ServiceError, http_status_for
from service.schemas.jobs import JobCreate

_JOBS = "/v1/jobs"
_JOB = "/v1/jobs/"


class _Route(NamedTuple):
    """What the metrics middleware reads from ``scope["route"]``: the route template."""

    path: str


_STATUS_ROUTE, _CREATE_ROUTE = _Route("/v1/jobs/{job_id}"), _Route(_JOBS)


class HotLane:
    """Answer cached job-status reads and plain job creates before routing; see the module docstring."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path, cache = scope["method"], scope["path"], self.ctx.status_cache
            if method == "GET" and path.startswith(_JOB) and cache is not None:
                if await self._status(scope, send, cache, path[len(_JOB) :]):
                    return
            elif method == "POST" and path == _JOBS:
                await self._create(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _status(self, scope: Scope, send: Send, cache: JobStatusCache, job_id: str) -> bool:
        if not job_id or "/" in job_id:
            return False  # another route, or none: those that authenticate charge the token themselves
        headers = _headers(scope)
        who = verified_caller(self.ctx, headers.get(b"authorization", b"").decode("latin-1"))
        if who is None or not self._charge(scope, who):
            return False
        body = cache.get(job_id, who.project_id)
        if body is None:
            return False
        scope["route"] = _STATUS_ROUTE
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        who = verified_caller(self.ctx, headers.get(b"authorization", b"").decode("latin-1"))
        key = headers.get(b"idempotency-key")
        content_type = headers.get(b"content-type", b"")
        if (
            who is None
            or content_type.split(b";")[0].strip() != b"application/json"
            or (key is not None and not valid_key(key.decode("latin-1")))
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left before sending the whole body: nothing to answer
        done = await self._created(scope, who, key, body)
        if done is None:  # the route answers, with the body replayed
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = _CREATE_ROUTE
        await done(scope, receive, send)

    async def _created(self, scope: Scope, who: Principal, key: bytes | None, body: bytes) -> Response | None:
        """The create's response, or None for the route to answer (bad JSON, rate-limited, invalid
        spec, or nothing written by the on-loop create)."""
        try:
            parsed = json.loads(body)  # as FastAPI parses it
        except (ValueError, RecursionError):  # bad JSON or text, deep nesting
            return None  # FastAPI refuses it before authenticating: no token is charged here
        if not self._charge(scope, who):
            return None  # the route answers 429
        try:
            job = JobCreate.model_validate(parsed)  # as FastAPI validates it
        except (ValidationError, ValueError, RecursionError):
            return None  # the route answers with its own wording
        keyed = IdempotencyContext(None, "", "")
        if key is not None:
            keyed = IdempotencyContext(key.decode("latin-1"), f"POST {_JOBS}", fingerprint(body, parsed))
        try:
            return await create_on_loop(self.ctx, who, keyed, job)
        except ServiceError as exc:
            return error_response(http_status_for(exc), exc.code, exc.message, exc.headers)

    def _charge(self, scope: Scope, who: Principal) -> bool:
        """Spend the caller's token for this request (once: the routes see the charge in the scope).
        Called only where the route would authenticate and charge too. False: limited; let the route
        answer 429."""
        try:
            self.ctx.limiter.take(who.key_id)
        except RateLimitedError:
            return False
        scope[CHARGED] = who.key_id
        return True


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # Header names arrive lower-cased (ASGI). A repeated header keeps its first value: the routes read
    # headers with Starlette's ``headers.get``, which answers the first, and the lane must not
    # authenticate or key a request differently from them.
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    return headers


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (bounded by the body-limit middleware outside); None on disconnect."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the body already read, then whatever the client sends next (disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
