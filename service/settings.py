"""Service settings: one pydantic-settings class read from ``LOWBIT_*`` environment variables.

Embedded defaults (SQLite, a local object directory, a filesystem broker) need nothing installed;
the distributed mode sets ``LOWBIT_DATABASE_URL=postgresql+psycopg://...``,
``LOWBIT_BROKER_URL=redis://...`` and ``LOWBIT_STORAGE=s3`` with the ``LOWBIT_S3_*`` values.

Nothing is built at import time: call :func:`get_settings` (cached) or construct ``Settings(...)``.

>>> Settings(database_url="sqlite:///:memory:").storage
'local'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the API, the worker's service side and the CLI client."""

    model_config = SettingsConfigDict(env_prefix="LOWBIT_", extra="ignore")

    # Persistence and queue.
    database_url: str = "sqlite:///./.lowbit/lowbit.db"
    broker_url: str = "filesystem://"
    broker_folder: str = "./.lowbit/broker"

    # Object storage.
    storage: Literal["local", "s3"] = "local"
    local_storage_dir: str = "./.lowbit/objects"
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None  # what clients reach; presigned URLs are signed for this host
    s3_bucket: str = "lowbit"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    # Public base URL of the API, used for the local store's signed download/upload URLs.
    public_url: str = "http://127.0.0.1:8000"

    # Limits.
    max_upload_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_spec_bytes: int = Field(default=64 * 1024, gt=0)
    max_page_size: int = Field(default=200, gt=0)
    default_page_size: int = Field(default=50, gt=0)
    rate_limit_per_minute: int = Field(default=600, ge=0)  # per API key; 0 disables
    rate_limit_burst: int = Field(default=120, ge=1)
    # Failed API-key checks and dashboard sign-ins per client address (service/api/auth_throttle.py).
    auth_failures_per_minute: int = Field(default=10, ge=0)  # 0 disables
    auth_failure_burst: int = Field(default=20, ge=1)
    # /metrics: answered for clients in these networks (comma-separated CIDRs) or with
    # "Authorization: Bearer <metrics_token>" when a token is set; anyone else gets 404.
    metrics_allowed_networks: str = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    metrics_token: str = ""
    # PostgreSQL: job-status responses are cached per API process and dropped on the jobs trigger's
    # NOTIFY (service/db/status_cache.py); 0 turns the cache off.
    job_status_cache_entries: int = Field(default=10_000, ge=0)
    presign_expiry_s: int = Field(default=3600, gt=0, le=7 * 24 * 3600)
    multipart_part_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2)
    # Upload check budgets (service/uploads/budgets.py): one zip member inflated, its inflation ratio,
    # a model input's declared elements, one ONNX tensor.
    upload_max_member_bytes: int = Field(default=8 * 1024**3, gt=0)
    upload_max_inflation_ratio: int = Field(default=200, ge=1)
    upload_max_input_elements: int = Field(default=1 << 25, gt=0)
    upload_max_tensor_bytes: int = Field(default=4 * 1024**3, gt=0)

    # Networks (comma-separated CIDRs) that schedule webhooks may reach besides public addresses
    # (service/webhook_target.py): loopback, link-local, private and multicast are refused otherwise.
    webhook_allowed_networks: str = ""

    # HMAC key for local-store URL signatures. Embedded mode generates nothing: set it in production.
    secret_key: str = "lowbit-embedded-insecure-secret"

    # SSE: how often the job stream polls the database.
    sse_poll_s: float = Field(default=0.5, gt=0)
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str) -> str:
        # Plain postgres:// URLs (as most platforms hand them out) mean psycopg 3, the driver installed.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        """True when the database is an embedded SQLite file."""
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()
