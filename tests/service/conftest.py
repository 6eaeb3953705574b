"""Shared fixtures of the service tests: real PostgreSQL, SeaweedFS S3, and the embedded SQLite/local mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db.migrate import upgrade
from service.db.session import make_engine, make_sessionmaker
from service.settings import Settings
from tests.fixtures.postgres import fresh_database
from tests.fixtures.seaweedfs import SeaweedS3, start_seaweedfs, stop_seaweedfs


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server, proc = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop_seaweedfs(proc)


def s3_settings(server: SeaweedS3, **overrides: object) -> dict[str, object]:
    """Settings values pointing at ``server``."""
    return {
        "storage": "s3",
        "s3_endpoint": server.endpoint,
        "s3_bucket": server.bucket,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
        **overrides,
    }


@pytest.fixture(params=["postgres+s3", "sqlite+local"], scope="session")
def mode_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Migrated Settings for the distributed (PostgreSQL + S3) and the embedded (SQLite + local) mode."""
    root = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    if request.param == "postgres+s3":
        server = request.getfixturevalue("seaweed")
        with fresh_database() as url:
            settings = Settings(database_url=url, **s3_settings(server), secret_key="test-secret")  # type: ignore[arg-type]
            upgrade(settings)
            yield settings
    else:
        settings = Settings(
            database_url=f"sqlite:///{root / 'lowbit.db'}",
            storage="local",
            local_storage_dir=str(root / "objects"),
            secret_key="test-secret",
        )
        upgrade(settings)
        yield settings


@pytest.fixture(scope="session")
def db_engine(mode_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(mode_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    factory: sessionmaker[Session] = make_sessionmaker(db_engine)
    session = factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()
