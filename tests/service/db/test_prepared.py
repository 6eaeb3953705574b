"""Prepared statements: parameters as SQLAlchemy would bind them, rows as it would load them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
)

from service.db.base import UTCDateTime
from service.db.prepared import Prepared, sqlite_named

T = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON),
          Column("at", UTCDateTime()), Column("kind", String(8)))  # fmt: skip


def test_values_round_trip_like_sqlalchemy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Given rows written by SQLAlchemy and by Prepared, both read back equal through either."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    engine = create_engine(url)
    T.metadata.create_all(engine)
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(T), {"id": 1, "doc": {"a": [1, None]}, "at": at, "kind": "x"})
    add = Prepared.compile(insert(T).values(id=bindparam("id"), doc=bindparam("doc", type_=JSON),
                                            at=bindparam("at", type_=UTCDateTime()), kind="y"), sqlite_named())  # fmt: skip
    raw = sqlite3.connect(str(tmp_path / "p.db"))
    raw.execute(add.sql, add.params({"id": 2, "doc": None, "at": at}))  # kind: the statement's own value
    raw.commit()
    read = Prepared.compile(select(T).where(T.c.kind == bindparam("kind")), sqlite_named())
    assert raw.execute("SELECT doc FROM t WHERE id = 2").fetchone() == ("null",)  # JSON null, as SQLAlchemy
    for kind in ("x", "y"):
        mine = read.row(raw.execute(read.sql, read.params({"kind": kind})).fetchone())
        with engine.connect() as conn:
            theirs = dict(conn.execute(select(T).where(T.c.kind == kind)).mappings().one())
        assert mine == theirs and mine["at"] == at
    with pytest.raises(KeyError, match="'kind'"):
        read.params({})
