"""Where a client's API URL and key come from, and one sentence that says so in every error.

Precedence, each setting on its own (the README's "Client configuration" section):

1. an explicit argument (``LowbitClient(url=..., api_key=...)``),
2. the environment: ``LOWBIT_URL``, ``LOWBIT_API_KEY``,
3. the data directory of a local ``lowbit serve`` (``LOWBIT_DATA_DIR``, else ``./.lowbit``): its ``url``
   file (written while the server runs) and ``api_key`` file (mode 0600). The stored key is only sent
   to the stored URL, never to another server,
4. the URL ``http://127.0.0.1:8000`` (no default key).

A URL given with the API prefix (``http://host:8000/v1``) is accepted: the client adds ``/v1`` itself.

>>> resolve_client_config(environ={"LOWBIT_URL": "http://h:8000/v1/", "LOWBIT_API_KEY": "lb_x"}).url
'http://h:8000'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None
    url_source: str  # e.g. "LOWBIT_URL", "./.lowbit/url (local lowbit serve)", "the default"
    key_source: str | None
    data_dir: Path

    def describe(self) -> str:
        """`URL (from SOURCE)`, for messages."""
        return f"{self.url} (URL from {self.url_source})"


def normalize_url(url: str) -> str:
    """Strip trailing slashes and a trailing API prefix ``/v1`` (the client adds it to each path)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def resolve_client_config(
    url: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    data_dir: str | Path | None = None,
) -> ClientConfig:
    """The URL and key a client uses, each with where it came from (see the module docstring)."""
    env = os.environ if environ is None else environ
    dir_from_env = env.get("LOWBIT_DATA_DIR")
    root = Path(data_dir or dir_from_env or ".lowbit")
    where = f"LOWBIT_DATA_DIR={root}" if (dir_from_env and not data_dir) else str(root)
    stored_url, stored_key = _read(root / "url"), _read(root / "api_key")

    if url:
        url_value, url_source = url, "the url argument"
    elif env.get("LOWBIT_URL"):
        url_value, url_source = env["LOWBIT_URL"], "LOWBIT_URL"
    elif stored_url:
        url_value, url_source = stored_url, f"{where}/url (local lowbit serve)"
    else:
        url_value, url_source = DEFAULT_URL, "the default"
    url_value = normalize_url(url_value)

    key_value: str | None
    key_source: str | None
    if api_key:
        key_value, key_source = api_key, "the api_key argument"
    elif env.get("LOWBIT_API_KEY"):
        key_value, key_source = env["LOWBIT_API_KEY"].strip(), "LOWBIT_API_KEY"
    elif stored_key and (stored_url is None or normalize_url(stored_url) == url_value):
        # The local server's key only goes to the local server.
        key_value, key_source = stored_key, f"{where}/api_key (local lowbit serve)"
    else:
        key_value, key_source = None, None
    return ClientConfig(url_value, key_value, url_source, key_source, root)


def missing_key_message(config: ClientConfig) -> str:
    """Why there is no key, and how to get one."""
    stored_url = _read(config.data_dir / "url")
    msg = f"no API key for {config.describe()}: set LOWBIT_API_KEY (make one with `lowbit admin create-key PROJECT`)"
    if stored_url and normalize_url(stored_url) != config.url:
        msg += f"; the key in {config.data_dir}/api_key belongs to {stored_url} and is not sent elsewhere"
    elif config.url_source == "the default":
        msg += ", set LOWBIT_URL, or start `lowbit serve` in this directory (or set LOWBIT_DATA_DIR)"
    return msg
