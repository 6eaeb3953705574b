"""Apply Alembic migrations (``lowbit db upgrade``); never run at import time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from service.db.session import make_engine
from service.settings import Settings


def alembic_config(database_url: str) -> Config:
    """An Alembic Config pointing at the migrations/ package and ``database_url``."""
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'migrations' package is not installed next to 'service'")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(next(iter(spec.submodule_search_locations)))))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head", engine: Engine | None = None) -> None:
    """Bring the database of ``settings`` to ``revision`` (default: the newest)."""
    own = engine is None
    engine = engine or make_engine(settings)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(settings.database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if own:
            engine.dispose()


def at_head(settings: Settings, engine: Engine | None = None) -> bool:
    """Whether the database of ``settings`` is at the newest migration (False when unreachable)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    own = engine is None
    engine = engine or make_engine(settings)
    try:
        heads = set(ScriptDirectory.from_config(alembic_config(settings.database_url)).get_heads())
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads()) == heads
    except Exception:  # not reachable yet, or not migrated: the caller waits
        return False
    finally:
        if own:
            engine.dispose()
