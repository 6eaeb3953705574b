"""Alembic revisions and the SQLAlchemy models describe the same schema, on PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.db.migrate import upgrade
from service.db.models import Base
from service.settings import Settings
from tests.fixtures.postgres import fresh_database


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_postgres_migrations_match_models() -> None:
    """Given an empty PostgreSQL database, when migrated to head, autogenerate finds nothing to change."""
    with fresh_database() as url:
        upgrade(Settings(database_url=url))
        assert _diff(url) == []


def test_sqlite_migrations_run_and_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lowbit.db'}"
    upgrade(Settings(database_url=url))
    upgrade(Settings(database_url=url))  # a second upgrade is a no-op
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert _diff(url) == []
