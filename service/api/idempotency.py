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

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.api.context import AppContext, Principal, principal
from service.db.repositories import idempotency
from service.errors import InvalidInputError


@dataclass(frozen=True)
class IdempotencyContext:
    key: str | None
    scope: str
    fingerprint: str


def valid_key(key: str) -> bool:
    """Whether an Idempotency-Key header value is acceptable (1-255 printable characters)."""
    return 1 <= len(key) <= 255 and key.isprintable()


_UNPARSED: Any = object()


def fingerprint(body: bytes, parsed: Any = _UNPARSED) -> str:
    """The sha256 of the body's canonical JSON (key order and whitespace do not matter); the raw
    bytes' hash when the body is not JSON (validation refuses it later). ``parsed``: the body already
    parsed with ``json.loads`` (the hot lane has it), so it is not parsed twice."""
    try:
        value = json.loads(body or b"null") if parsed is _UNPARSED else parsed
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON, not text, nested too deep for the parser
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


async def idempotency_context(request: Request) -> IdempotencyContext:
    """Read the Idempotency-Key header and fingerprint the body."""
    key = request.headers.get("idempotency-key")
    if key is not None and not valid_key(key):
        raise InvalidInputError(
            "Idempotency-Key must be 1-255 printable characters", code="invalid_idempotency_key"
        )
    if key is None:
        return IdempotencyContext(None, "", "")  # nothing to fingerprint: skip reading and hashing the body
    body = await request.body()
    route = getattr(request.scope.get("route"), "path", request.url.path)
    scope = f"{request.method} {request.url.path}" if "{" in route else f"{request.method} {route}"
    return IdempotencyContext(key, scope, fingerprint(body))


@dataclass
class Idempotent:
    """Runs a create once per Idempotency-Key; see :meth:`run`. ``session`` is open during ``create``."""

    ctx: IdempotencyContext
    sessions: sessionmaker[Session]
    who: Principal
    write_lock: AbstractContextManager[Any]
    writers: CapacityLimiter
    session: Session = field(init=False)

    async def run(
        self, create: Callable[[], Any], status_code: int = 201, *, one_write: bool = False
    ) -> Response:
        """Replay the stored response, or call ``create()`` (which adds rows to ``self.session`` and
        returns a JSON-able body or a pydantic model) and commit the body with those rows. All DB
        work runs in one worker thread.

        ``one_write``: ``create()`` only reads before a single write statement, atomic on its own;
        without an Idempotency-Key it then runs in autocommit mode, which saves the BEGIN and COMMIT
        round trips. (With a key, the stored response must commit with the rows: one transaction.)"""
        return await to_thread.run_sync(self._run, create, status_code, one_write, limiter=self.writers)

    def _run(self, create: Callable[[], Any], status_code: int, one_write: bool) -> Response:
        with self.write_lock, self.sessions() as session:
            self.session = session
            return self._in_session(session, create, status_code, one_write)

    def _in_session(
        self, session: Session, create: Callable[[], Any], status_code: int, one_write: bool
    ) -> Response:
        if self.ctx.key is None:
            if one_write:
                session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            body = create()
            session.commit()
            return _response(body, status_code)
        args = (self.who.project_id, self.ctx.key, self.ctx.scope, self.ctx.fingerprint)
        stored = idempotency.lookup(session, *args)
        if stored is not None:
            return replay(stored.response, stored.status_code)
        body = create()
        try:
            saved = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
            idempotency.save(session, *args, status_code, saved)
            session.commit()
        except IntegrityError:
            # A concurrent first use committed first: drop ours and answer with theirs.
            session.rollback()
            stored = idempotency.lookup(session, *args)
            if stored is None:
                raise
            return replay(stored.response, stored.status_code)
        return _response(body, status_code)


def _response(body: Any, status_code: int) -> Response:
    # A model is serialized once, straight to JSON bytes (no dict round trip through json.dumps).
    if isinstance(body, BaseModel):
        return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")
    return JSONResponse(body, status_code=status_code)


def replay(body: Any, status_code: int | None) -> JSONResponse:
    """The response stored for a key, answered again."""
    return JSONResponse(body, status_code=status_code or 200, headers={"Idempotent-Replayed": "true"})


async def idempotent(request: Request, who: Principal = Depends(principal)) -> Idempotent:
    # async: FastAPI runs a plain def dependency in the threadpool (a second thread hop per create).
    # One sub-dependency (the caller, authenticated first): each one FastAPI resolves costs more than
    # reading the header and the app's context directly.
    app: AppContext = request.app.state.ctx
    return Idempotent(await idempotency_context(request), app.sessions, who, app.write_lock, app.writers)
