"""/v1/datasets: calibration and evaluation data."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from service.api.context import (
    AppContext,
    PageLimit,
    Principal,
    app_context,
    db_session,
    page_limit,
    principal,
)
from service.api.idempotency import Idempotent, idempotent
from service.api.routes import dataset_shards, uploads
from service.db.models import Dataset
from service.db.repositories import resources
from service.errors import InvalidInputError
from service.schemas.common import Page, Sha256
from service.schemas.resources import DatasetCreate, DatasetFormat, DatasetKind, DatasetRead, ReadyStatus

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=DatasetRead)
async def create_dataset(
    body: DatasetCreate, idem: Idempotent = Depends(idempotent), ctx: AppContext = Depends(app_context)
) -> object:
    """Declare a dataset; with ``size`` and ``sha256`` the answer's ``upload`` holds presigned URLs,
    otherwise PUT the bytes to ``/v1/datasets/{id}/content``."""
    if (body.size is None) != (body.sha256 is None):
        raise InvalidInputError("give both size and sha256 (presigned upload) or neither (streaming upload)")
    if body.format == "sharded" and body.size is not None:
        raise InvalidInputError(
            "a sharded dataset's bytes are uploaded per shard: POST /v1/datasets/{id}/shards, then /seal",
            code="sharded_dataset",
        )

    def create() -> object:
        dataset = resources.create_dataset(
            idem.session, idem.who.project_id, body.name, body.kind, body.format
        )
        target = None
        if body.size is not None and body.sha256 is not None:
            target = uploads.declare(ctx, idem.session, "dataset", dataset, body.size, body.sha256)
        out = DatasetRead.model_validate(dataset)
        out.upload = target
        return out.model_dump(mode="json")

    return await idem.run(create)


@router.get("", response_model=Page[DatasetRead])
def list_datasets(
    cursor: str | None = None,
    limit: PageLimit = None,
    sha256: Sha256 | None = None,
    kind: DatasetKind | None = None,
    format: DatasetFormat | None = None,
    status: ReadyStatus | None = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Page[DatasetRead]:
    """The project's datasets; ``sha256`` (with ``kind``, ``format``, ``status``) finds stored content."""
    filters = {"sha256": sha256, "kind": kind, "format": format, "status": status}
    rows, nxt = resources.list_datasets(session, who.project_id, page_limit(ctx, limit), cursor, **filters)
    return Page(items=[DatasetRead.model_validate(d) for d in rows], next_cursor=nxt)


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(
    dataset_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> DatasetRead:
    return DatasetRead.model_validate(resources.get_dataset(session, who.project_id, dataset_id))


@router.put(
    "/{dataset_id}/content",
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def put_dataset_content(
    dataset_id: str,
    request: Request,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
) -> dict[str, object]:
    """Stream the dataset file through the API. Optional header ``X-Content-SHA256`` is verified."""

    def load(session: Session) -> Dataset:
        dataset = resources.get_dataset(session, who.project_id, dataset_id)
        if dataset.format == "sharded":
            raise InvalidInputError(
                "a sharded dataset's bytes are uploaded per shard: PUT /v1/datasets/{id}/shards/{index}/content",
                code="sharded_dataset",
            )
        return dataset

    return await uploads.stream_into(request, ctx, load)


router.include_router(dataset_shards.router)  # /v1/datasets/{id}/shards…, /seal, /manifest
