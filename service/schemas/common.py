"""Shared schema pieces: strict base model, pages, error bodies, names."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")
MAX_INT32 = 2**31 - 1  # INTEGER columns (versions, event and log ids)

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ResourceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-z]{26}$")]


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
