"""First start of embedded mode on a real SQLite file: migrations, bootstrap key (0600), reuse, client fallback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from service.client import LowbitClient, embedded_defaults
from service.db.models import Project
from service.db.repositories import projects
from service.db.session import make_engine, make_sessionmaker, session_scope
from worker.embedded.bootstrap import DEFAULT_PROJECT, bootstrap
from worker.embedded.datadir import DataDir, settings_environ


def _project_of(settings: object, key: str) -> str:
    engine = make_engine(settings)  # type: ignore[arg-type]
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            project = session.get(Project, projects.authenticate(session, key).project_id)
            return project.name if project is not None else ""
    finally:
        engine.dispose()


def test_bootstrap_creates_a_private_key_once_and_reuses_it(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / "data")
    settings = data.settings("http://127.0.0.1:1")
    key = bootstrap(data, settings)
    assert key.startswith("lb_") and data.api_key_file.read_text().strip() == key
    for secret in (data.api_key_file, data.root / "secret_key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert _project_of(settings, key) == DEFAULT_PROJECT
    assert bootstrap(data, settings) == key  # a restart keeps the key
    assert settings.secret_key == data.settings("http://x").secret_key != "lowbit-embedded-insecure-secret"


def test_a_key_that_no_longer_authenticates_is_replaced(tmp_path: Path) -> None:
    data = DataDir.at(tmp_path / "data")
    settings = data.settings("http://127.0.0.1:1")
    data.api_key_file.write_text("lb_not-a-key-of-this-database\n")
    key = bootstrap(data, settings)
    assert key != "lb_not-a-key-of-this-database" and _project_of(settings, key) == DEFAULT_PROJECT
    assert stat.S_IMODE(data.api_key_file.stat().st_mode) == 0o600


def test_settings_environ_round_trips_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    settings = DataDir.at(tmp_path / "d").settings("http://127.0.0.1:9")
    for name, value in settings_environ(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_client_falls_back_to_the_local_server_only_for_its_own_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a data dir with url + api_key, Then a client with no configuration uses both; a client
    pointed at another LOWBIT_URL never receives the local key."""
    (tmp_path / "url").write_text("http://127.0.0.1:1234\n")
    (tmp_path / "api_key").write_text("lb_local\n")
    monkeypatch.delenv("LOWBIT_API_KEY", raising=False)
    monkeypatch.delenv("LOWBIT_URL", raising=False)
    monkeypatch.setenv("LOWBIT_DATA_DIR", str(tmp_path))
    assert embedded_defaults() == ("http://127.0.0.1:1234", "lb_local")
    with LowbitClient() as client:
        assert client.url == "http://127.0.0.1:1234"
        assert client.http.headers["Authorization"] == "Bearer lb_local"
    monkeypatch.setenv("LOWBIT_URL", "http://elsewhere:8000")
    with pytest.raises(Exception, match="no API key"):
        LowbitClient()
    monkeypatch.setenv("LOWBIT_DATA_DIR", str(tmp_path / "missing"))
    monkeypatch.delenv("LOWBIT_URL")
    assert embedded_defaults() == (None, None)
