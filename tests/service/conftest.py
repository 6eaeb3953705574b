"""Shared fixtures of the service tests: real PostgreSQL, SeaweedFS S3, and the embedded SQLite/local mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db.migrate import upgrade
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from service.settings import Settings
from tests.fixtures.live_api import live_api
from tests.fixtures.postgres import fresh_database
from tests.fixtures.seaweedfs import SeaweedS3, start_seaweedfs, stop_seaweedfs
from tests.service.samples import make_ready_dataset, make_ready_model


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


@dataclass
class Api:
    url: str
    settings: Settings
    key: str  # project A
    other_key: str  # project B

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def api(mode_settings: Settings) -> Iterator[Api]:
    # Small parts so an 11 MiB test file takes the multipart path.
    settings = mode_settings.model_copy(
        update={"rate_limit_per_minute": 0, "multipart_part_bytes": 5 * 1024 * 1024}
    )
    engine = make_engine(settings)
    with session_scope(make_sessionmaker(engine)) as session:
        keys = []
        for _ in range(2):
            project = projects.create_project(session, f"proj-{os.urandom(4).hex()}")
            keys.append(projects.create_api_key(session, project, "test")[1])
    engine.dispose()
    with live_api(settings) as (url, live_settings):
        yield Api(url, live_settings, keys[0], keys[1])


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


@pytest.fixture
def ready_inputs(client: httpx.Client) -> tuple[dict[str, object], dict[str, object]]:
    suffix = os.urandom(4).hex()
    return make_ready_model(client, f"m-{suffix}"), make_ready_dataset(client, f"d-{suffix}")
