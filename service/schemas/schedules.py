"""Schedules: a job template run on the latest version of a model at each cron fire time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from service.schemas.common import JsonObject, Name, Strict
from service.schemas.jobs import JobSpec

_PLACEHOLDER_MODEL = "0" * 26


def check_template(template: dict[str, Any]) -> dict[str, Any]:
    """The template as a stored job spec without ``model_id`` (validated like POST /v1/jobs)."""
    if "model_id" in template or "model_version" in template:
        raise ValueError("a schedule template names no model_id/model_version: runs use the latest version")
    spec = JobSpec.model_validate({**template, "model_id": _PLACEHOLDER_MODEL}).model_dump(mode="json")
    spec.pop("model_id")
    spec.pop("model_version")
    return spec


def _template_schema() -> dict[str, Any]:
    """The OpenAPI schema of a template: JobSpec's without model_id and model_version."""
    schema = JobSpec.model_json_schema()
    for name in ("model_id", "model_version"):
        schema["properties"].pop(name)
    schema["required"] = [name for name in schema["required"] if name != "model_id"]
    schema["title"] = "JobTemplate"
    schema["description"] = "a job spec (see JobSpec) without model_id and model_version"
    return schema


Template = Annotated[JsonObject, WithJsonSchema(_template_schema())]
# Only http(s) URLs (check_webhook); whether the target's address is allowed is decided at create time.
_WEBHOOK_URL: dict[str, Any] = {"pattern": "^https?://"}


def check_cron(cron: str) -> str:
    """A 5-field cron expression that fires within a year from now (``0 0 31 2 *`` never does)."""
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ValueError(f"invalid cron expression {cron!r}; use 5 fields: minute hour day month weekday")
    now = datetime.now(UTC)
    try:
        fire = croniter(cron, now, max_years_between_matches=1).get_next(datetime)
    except (ValueError, KeyError, OverflowError):  # CroniterBadDateError is a ValueError
        fire = None
    if fire is None or fire - now > timedelta(days=366):
        raise ValueError(
            f"cron expression {cron!r} does not fire within a year (a date that does not exist, such as "
            "February 31?); accepted: an expression with a fire time in the next 12 months"
        )
    return cron


def check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {tz!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None
    return tz


def check_webhook(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise ValueError("webhook_url must be an http:// or https:// URL")
    return url


class ScheduleCreate(Strict):
    """``template``: a job spec (see JobCreate) without model_id; ``model_name``'s latest ready version is used."""

    name: Name
    model_name: Name
    template: Template
    cron: str = Field(max_length=100, examples=["0 2 * * *"])
    timezone: str = Field(default="UTC", max_length=64)
    enabled: bool = True
    webhook_url: str | None = Field(default=None, max_length=2000, json_schema_extra=_WEBHOOK_URL)
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=100)
    regression_threshold: float = Field(default=0.01, ge=0, le=1)

    _template = field_validator("template")(classmethod(lambda cls, v: check_template(v)))
    _cron = field_validator("cron")(classmethod(lambda cls, v: check_cron(v)))
    _tz = field_validator("timezone")(classmethod(lambda cls, v: check_timezone(v)))
    _hook = field_validator("webhook_url")(classmethod(lambda cls, v: check_webhook(v)))


class ScheduleUpdate(Strict):
    """Fields to change; omitted fields keep their value."""

    name: Name | None = None
    model_name: Name | None = None
    template: Template | None = None
    cron: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(default=None, max_length=64)
    enabled: bool | None = None
    webhook_url: str | None = Field(default=None, max_length=2000, json_schema_extra=_WEBHOOK_URL)
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=100)
    regression_threshold: float | None = Field(default=None, ge=0, le=1)

    _template = field_validator("template")(classmethod(lambda cls, v: v if v is None else check_template(v)))
    _cron = field_validator("cron")(classmethod(lambda cls, v: v if v is None else check_cron(v)))
    _tz = field_validator("timezone")(classmethod(lambda cls, v: v if v is None else check_timezone(v)))
    _hook = field_validator("webhook_url")(classmethod(lambda cls, v: check_webhook(v)))


class ScheduleRead(BaseModel):
    """A schedule; the webhook secret is never returned."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    model_name: str
    template: dict[str, Any]
    cron: str
    timezone: str
    enabled: bool
    webhook_url: str | None
    has_webhook_secret: bool = False
    regression_threshold: float
    last_scheduled_for: datetime | None
    created_at: datetime
    updated_at: datetime


class ScheduleRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    scheduled_for: datetime
    job_id: str | None
    status: str
    message: str
    regressed: bool | None
    metric: float | None
    baseline_metric: float | None
    baseline_job_id: str | None
    webhook_status: str | None
    webhook_attempts: int
    created_at: datetime
    model_version: int | None = None  # the version the run's job quantized, and its content hash
    model_sha256: str | None = None
