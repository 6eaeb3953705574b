"""Settings: environment prefix, embedded defaults, driver normalization, limits validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_embedded_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.is_sqlite and defaults.storage == "local" and defaults.broker_url == "filesystem://"
    monkeypatch.setenv("LOWBIT_DATABASE_URL", "postgres://u@db:5432/lowbit")
    monkeypatch.setenv("LOWBIT_STORAGE", "s3")
    monkeypatch.setenv("LOWBIT_RATE_LIMIT_PER_MINUTE", "5")
    s = Settings()
    assert s.database_url == "postgresql+psycopg://u@db:5432/lowbit" and not s.is_sqlite
    assert s.storage == "s3" and s.rate_limit_per_minute == 5


@pytest.mark.parametrize(
    ("field", "value"), [("storage", "ftp"), ("presign_expiry_s", 0), ("multipart_part_bytes", 1024)]
)
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]
