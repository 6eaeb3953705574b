"""Shared schema pieces: strict base model, pages, error bodies, names."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

T = TypeVar("T")
MAX_INT32 = 2**31 - 1  # INTEGER columns (versions, event and log ids)

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ResourceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-z]{26}$")]
# Free-form JSON fields (quantsim configs, technique params, schedule templates): real ones nest a few
# levels; a config nested ~900 deep passed validation and then failed serialization with a 500.
MAX_JSON_DEPTH = 32
MAX_JSON_NODES = 20_000


def check_json_shape(value: Any) -> Any:
    """``value`` unchanged when it nests at most MAX_JSON_DEPTH levels and holds at most MAX_JSON_NODES
    values; ValueError otherwise (walked without recursion)."""
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels; accepted: at most {MAX_JSON_DEPTH}")
        if nodes > MAX_JSON_NODES:
            raise ValueError(f"holds more than {MAX_JSON_NODES} values; accepted: at most {MAX_JSON_NODES}")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_shape)]


class Strict(BaseModel):
    """Request models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# Rules the API enforces across fields, written into the OpenAPI schema as JSON Schema so that a request
# the schema allows is one the API accepts (schemathesis' positive_data_acceptance holds them to it).
# Both or neither of size and sha256: a presigned upload needs both, a streamed one neither.
PRESIGNED_PAIR: dict[str, Any] = {
    "anyOf": [
        {
            "required": ["size", "sha256"],
            "properties": {"size": {"type": "integer"}, "sha256": {"type": "string"}},
        },
        {"properties": {"size": {"type": "null"}, "sha256": {"type": "null"}}},
    ]
}


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def check_rfc3339(value: Any) -> Any:
    """``value`` when it is an RFC 3339 date-time with its offset (the OpenAPI ``date-time`` format);
    pydantic alone would also take Unix timestamps, bare dates and times without an offset."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time; accepted: e.g. 2026-01-31T12:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(check_rfc3339)]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` to get the next (null on the last page)."""

    items: list[T]
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"code": "...", "message": "..."}}``."""

    error: ErrorDetail


class UploadTarget(BaseModel):
    """Where to send the bytes of a declared upload, then call ``complete_url``."""

    upload_id: str
    method: str = Field(description="'put' (one presigned PUT) or 'multipart' (one presigned PUT per part)")
    url: str | None = None
    part_size: int | None = None
    part_urls: list[str] = []
    complete_url: str
    expires_in: int


class CompletedPart(Strict):
    part_number: int = Field(ge=1, le=10000)
    etag: str = Field(min_length=1, max_length=200)


class UploadComplete(Strict):
    parts: list[CompletedPart] = Field(default=[], max_length=10000)
