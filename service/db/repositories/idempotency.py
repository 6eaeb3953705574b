"""Stored responses of create requests, keyed by (project, Idempotency-Key, route)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.models import IdempotencyKey
from service.errors import IdempotencyInFlightError, IdempotencyKeyReusedError


def lookup(
    session: Session, project_id: str, key: str, scope: str, request_hash: str
) -> IdempotencyKey | None:
    """The stored record for a retry, or None for a first use.

    Raises IdempotencyKeyReusedError when the key was used with another body, and
    IdempotencyInFlightError when the first request has not finished.
    """
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.project_id == project_id, IdempotencyKey.key == key, IdempotencyKey.scope == scope
        )
    )
    if row is None:
        return None
    check_stored(row.request_hash, row.status_code, request_hash)
    return row


def check_stored(stored_hash: str, status_code: int | None, request_hash: str) -> None:
    """Raise unless a stored response may be replayed for a request fingerprinted ``request_hash``."""
    if stored_hash != request_hash:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was already used with a different request body; use a new key"
        )
    if status_code is None:
        raise IdempotencyInFlightError(
            "a request with this Idempotency-Key is still in progress; retry later"
        )


def save(
    session: Session, project_id: str, key: str, scope: str, request_hash: str, status_code: int, body: Any
) -> None:
    """Store the response in the caller's transaction, so the resource and its key commit together.

    A concurrent first use of the same key makes the commit fail on the unique constraint; the caller
    then rolls back its resource and replays the winner's response.
    """
    row = IdempotencyKey(
        project_id=project_id,
        key=key,
        scope=scope,
        request_hash=request_hash,
        status_code=status_code,
        response=body,
    )
    session.add(row)
    session.flush()


__all__ = ["IntegrityError", "check_stored", "lookup", "save"]
