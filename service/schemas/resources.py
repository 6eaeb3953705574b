"""Models, model versions and datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import PRESIGNED_PAIR, Name, Sha256, Strict, UploadTarget
from service.settings import Settings

ModelFormat = Literal["onnx", "pt2"]
DatasetFormat = Literal["npz", "safetensors", "sharded"]
ShardFormat = Literal["npz", "safetensors"]
DatasetKind = Literal["calibration", "evaluation", "training"]
ReadyStatus = Literal["pending", "ready", "rejected"]
# Declared sizes over the (default) upload limit are refused with 413.
_SIZE = {"maximum": Settings.model_fields["max_upload_bytes"].default}


class ModelCreate(Strict):
    name: Name
    description: str = Field(default="", max_length=2000)


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    created_at: datetime
    latest_version: int | None = None


class ModelVersionCreate(Strict):
    """Declare a version. With ``size`` and ``sha256`` the answer carries presigned upload URLs;
    without them, stream the bytes to ``PUT /v1/models/{id}/versions/{n}/content``."""

    model_config = ConfigDict(json_schema_extra=PRESIGNED_PAIR)

    format: ModelFormat
    size: int | None = Field(default=None, gt=0, json_schema_extra=_SIZE)
    sha256: Sha256 | None = None


class ModelVersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    version: int
    format: str
    status: ReadyStatus
    size: int | None
    sha256: str | None = Field(default=None, validation_alias="blob_sha256")
    created_at: datetime
    upload: UploadTarget | None = None


class DatasetCreate(Strict):
    # A sharded dataset's bytes come per shard: it declares neither size nor sha256.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                PRESIGNED_PAIR,
                {
                    "anyOf": [
                        {"properties": {"format": {"not": {"const": "sharded"}}}},
                        {"properties": {"size": {"type": "null"}, "sha256": {"type": "null"}}},
                    ]
                },
            ]
        }
    )

    name: Name
    kind: DatasetKind = "calibration"
    format: DatasetFormat
    size: int | None = Field(default=None, gt=0, json_schema_extra=_SIZE)
    sha256: Sha256 | None = None


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    format: str
    status: ReadyStatus
    size: int | None
    sha256: str | None = Field(default=None, validation_alias="blob_sha256")
    created_at: datetime
    upload: UploadTarget | None = None


class ShardCreate(Strict):
    """Declare shard ``index`` of a sharded dataset (0, 1, … without gaps). With ``size`` and
    ``sha256`` the answer carries presigned upload URLs (completed through ``/v1/uploads/{id}/complete``);
    without them, stream the bytes to ``PUT /v1/datasets/{id}/shards/{index}/content``."""

    model_config = ConfigDict(json_schema_extra=PRESIGNED_PAIR)

    index: int = Field(ge=0, lt=100_000)
    format: ShardFormat
    size: int | None = Field(default=None, gt=0, json_schema_extra=_SIZE)
    sha256: Sha256 | None = None


class ShardRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    index: int
    format: str
    status: ReadyStatus
    size: int | None
    samples: int | None
    sha256: str | None = Field(default=None, validation_alias="blob_sha256")
    upload: UploadTarget | None = None


class ManifestRead(BaseModel):
    """A sharded dataset's manifest: its shards in index order and their sample counts."""

    dataset_id: str
    status: ReadyStatus
    samples: int
    shards: list[ShardRead]
