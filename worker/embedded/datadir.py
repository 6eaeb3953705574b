"""The embedded data directory: where ``lowbit serve`` keeps its database, broker messages, objects,
logs and secrets, and the settings every child process gets.

Layout of ``DATA_DIR`` (default ``./.lowbit``)::

    lowbit.db        SQLite database (WAL); the directory is 0700, files 0600 (umask 077)
    broker/          filesystem broker (queue, processed, control folders)
    objects/         local object store
    logs/            one log file per child process
    api_key          bootstrap API key of the default project (0600)
    secret_key       HMAC key for the local store's signed URLs (0600), generated on first start
    url              base URL of the running server (removed when it stops)

The client (service/client.py) falls back to ``api_key`` and ``url`` here when ``LOWBIT_API_KEY`` /
``LOWBIT_URL`` are unset, so ``lowbit submit`` works with no configuration.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from service.settings import Settings

DEFAULT_DATA_DIR = Path(".lowbit")
API_KEY_FILE = "api_key"
SECRET_KEY_FILE = "secret_key"
URL_FILE = "url"


@dataclass(frozen=True)
class DataDir:
    """Paths inside one embedded data directory (absolute, so children may run from any cwd)."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None = None) -> DataDir:
        """The data directory at ``path`` (default ``./.lowbit``), created if missing."""
        root = Path(path if path is not None else DEFAULT_DATA_DIR).expanduser().resolve()
        # Every project's data lives here: only this user may read it. The umask covers what this
        # process and its children create from now on (database, broker messages, logs, objects).
        os.umask(0o077)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        (root / "logs").mkdir(exist_ok=True)
        for name in ("lowbit.db", "lowbit.db-wal", "lowbit.db-shm"):  # made by an earlier, laxer version
            if (root / name).exists():
                os.chmod(root / name, 0o600)
        return cls(root)

    @property
    def database(self) -> Path:
        return self.root / "lowbit.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def api_key_file(self) -> Path:
        return self.root / API_KEY_FILE

    @property
    def url_file(self) -> Path:
        return self.root / URL_FILE

    def secret_key(self) -> str:
        """The data directory's URL-signing secret, generated (0600) on first use."""
        path = self.root / SECRET_KEY_FILE
        if not path.exists():
            write_private(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def settings(self, public_url: str) -> Settings:
        """Service settings of embedded mode for this directory, serving at ``public_url``."""
        return Settings(
            database_url=f"sqlite:///{self.database}",
            broker_url="filesystem://",
            broker_folder=str(self.root / "broker"),
            storage="local",
            local_storage_dir=str(self.root / "objects"),
            public_url=public_url,
            secret_key=self.secret_key(),
        )


def settings_environ(settings: Settings) -> dict[str, str]:
    """``LOWBIT_*`` variables that make a child process build exactly ``settings``."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"LOWBIT_{name.upper()}"] = str(value)
    return env


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600 from creation, never wider)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.chmod(tmp, 0o600)  # the umask may not widen it, but an existing tmp file might have been wider
    os.replace(tmp, path)
