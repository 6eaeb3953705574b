"""Keyset (cursor) pagination over time-ordered string ids, newest first.

A cursor is the opaque, url-safe encoding of the last id of a page. Because ids sort by creation
time, rows inserted while a client pages never shift the pages it has not read yet.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.errors import InvalidInputError

T = TypeVar("T")


def encode_cursor(last_id: str) -> str:
    """The cursor that resumes after ``last_id``."""
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id inside ``cursor``; InvalidInputError for anything this module did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("v1:") or not (1 <= len(raw) - 3 <= 64) or not raw[3:].isalnum():
        raise InvalidInputError(
            "invalid cursor; pass the next_cursor value of a previous page unchanged", code="invalid_cursor"
        )
    return raw[3:]


def paginate(
    session: Session, stmt: Select[Any], id_col: InstrumentedAttribute[str], limit: int, cursor: str | None
) -> tuple[Sequence[Any], str | None]:
    """Run ``stmt`` for one page of at most ``limit`` rows; returns (rows, next_cursor or None)."""
    if cursor:
        stmt = stmt.where(id_col < decode_cursor(cursor))
    rows = session.scalars(stmt.order_by(id_col.desc()).limit(limit + 1)).all()
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(getattr(rows[-1], id_col.key))
    return rows, None
