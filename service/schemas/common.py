"""Shared schema pieces: strict base model, pages, error bodies, names."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

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
