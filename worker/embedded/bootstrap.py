"""First start of embedded mode: migrate the database and make sure a bootstrap API key exists.

Same code as ``lowbit db upgrade`` and ``lowbit admin create-project/create-key``; only the settings
(SQLite in the data directory) differ.
"""

from __future__ import annotations

from sqlalchemy import select

from service.db.migrate import upgrade
from service.db.models import Project
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.errors import AuthError
from service.settings import Settings
from worker.embedded.datadir import DataDir, write_private

DEFAULT_PROJECT = "default"
BOOTSTRAP_KEY_NAME = "embedded-bootstrap"


def bootstrap(data: DataDir, settings: Settings) -> str:
    """Apply migrations, then return the bootstrap API key of project ``default``.

    The key stored in ``data.api_key_file`` is reused while it still authenticates (a restart keeps
    the same key); otherwise a new one is created and written with mode 0600.
    """
    upgrade(settings)
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            stored = data.api_key_file.read_text().strip() if data.api_key_file.exists() else ""
            if stored:
                try:
                    projects.authenticate(session, stored)
                    return stored
                except AuthError:
                    pass  # revoked, or a different database: issue a new key below
            project = session.scalar(select(Project).where(Project.name == DEFAULT_PROJECT))
            if project is None:
                project = projects.create_project(session, DEFAULT_PROJECT)
            _, plaintext = projects.create_api_key(session, project, BOOTSTRAP_KEY_NAME)
        write_private(data.api_key_file, plaintext)  # only after the key row is committed
        return plaintext
    finally:
        engine.dispose()
