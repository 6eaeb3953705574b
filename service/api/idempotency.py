"""Idempotency-Key for create requests (IETF draft 'The Idempotency-Key HTTP Header Field').

Same key + same body → the stored response of the first request (same resource, same status).
Same key + a different body → 422 ``idempotency_key_reused``. The fingerprint is the sha256 of the
canonical JSON body (key order and whitespace do not matter) and the route.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.api.context import AppContext, Principal, app_context, principal
from service.db.repositories import idempotency
from service.errors import InvalidInputError


@dataclass(frozen=True)
class IdempotencyContext:
    key: str | None
    scope: str
    fingerprint: str


async def idempotency_context(request: Request) -> IdempotencyContext:
    """Read the Idempotency-Key header and fingerprint the body."""
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255 and key.isprintable()):
        raise InvalidInputError(
            "Idempotency-Key must be 1-255 printable characters", code="invalid_idempotency_key"
        )
    if key is None:
        return IdempotencyContext(None, "", "")  # nothing to fingerprint: skip reading and hashing the body
    body = await request.body()
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    route = getattr(request.scope.get("route"), "path", request.url.path)
    scope = f"{request.method} {request.url.path}" if "{" in route else f"{request.method} {route}"
    return IdempotencyContext(key, scope, hashlib.sha256(canonical).hexdigest())


@dataclass
class Idempotent:
    """Runs a create once per Idempotency-Key; see :meth:`run`. ``session`` is open during ``create``."""

    ctx: IdempotencyContext
    sessions: sessionmaker[Session]
    who: Principal
    write_lock: AbstractContextManager[Any]
    session: Session = field(init=False)

    async def run(self, create: Callable[[], Any], status_code: int = 201) -> JSONResponse:
        """Replay the stored response, or call ``create()`` (which adds rows to ``self.session`` and
        returns a JSON-able body) and commit the body with those rows. All DB work runs in one
        worker thread."""
        return await run_in_threadpool(self._run, create, status_code)

    def _run(self, create: Callable[[], Any], status_code: int) -> JSONResponse:
        with self.write_lock, self.sessions() as session:
            self.session = session
            return self._in_session(session, create, status_code)

    def _in_session(self, session: Session, create: Callable[[], Any], status_code: int) -> JSONResponse:
        if self.ctx.key is None:
            body = create()
            session.commit()
            return JSONResponse(body, status_code=status_code)
        args = (self.who.project_id, self.ctx.key, self.ctx.scope, self.ctx.fingerprint)
        stored = idempotency.lookup(session, *args)
        if stored is not None:
            return _replay(stored.response, stored.status_code)
        body = create()
        try:
            idempotency.save(session, *args, status_code, body)
            session.commit()
        except IntegrityError:
            # A concurrent first use committed first: drop ours and answer with theirs.
            session.rollback()
            stored = idempotency.lookup(session, *args)
            if stored is None:
                raise
            return _replay(stored.response, stored.status_code)
        return JSONResponse(body, status_code=status_code)


def _replay(body: Any, status_code: int | None) -> JSONResponse:
    return JSONResponse(body, status_code=status_code or 200, headers={"Idempotent-Replayed": "true"})


def idempotent(
    ctx: IdempotencyContext = Depends(idempotency_context),
    app: AppContext = Depends(app_context),
    who: Principal = Depends(principal),
) -> Idempotent:
    return Idempotent(ctx, app.sessions, who, app.write_lock)
