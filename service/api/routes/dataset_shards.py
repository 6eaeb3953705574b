"""/v1/datasets/{id}/shards: sharded training datasets — declare shards, upload each (presigned or
streamed, through the same checked upload flow as any dataset), seal, read the manifest."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from service.api.context import AppContext, Principal, app_context, db_session, principal
from service.api.idempotency import Idempotent, idempotent
from service.api.routes import uploads
from service.db.models import DatasetShard
from service.db.repositories import dataset_shards
from service.errors import InvalidInputError
from service.schemas.resources import ManifestRead, ShardCreate, ShardRead

# Included by service.api.routes.datasets under its /v1/datasets prefix.
router = APIRouter(tags=["datasets"])


@router.post("/{dataset_id}/shards", status_code=201, response_model=ShardRead)
async def create_shard(
    dataset_id: str,
    body: ShardCreate,
    idem: Idempotent = Depends(idempotent),
    ctx: AppContext = Depends(app_context),
) -> object:
    """Declare one shard; with ``size`` and ``sha256`` the answer's ``upload`` holds presigned URLs."""
    if (body.size is None) != (body.sha256 is None):
        raise InvalidInputError("give both size and sha256 (presigned upload) or neither (streaming upload)")

    def create() -> object:
        dataset = dataset_shards.sharded_dataset(idem.session, idem.who.project_id, dataset_id)
        shard = dataset_shards.create_shard(idem.session, dataset, body.index, body.format)
        target = None
        if body.size is not None and body.sha256 is not None:
            target = uploads.declare(ctx, idem.session, "dataset_shard", shard, body.size, body.sha256)
        out = ShardRead.model_validate(shard)
        out.upload = target
        return out.model_dump(mode="json")

    return await idem.run(create)


@router.put(
    "/{dataset_id}/shards/{index}/content",
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def put_shard_content(
    dataset_id: str,
    index: int,
    request: Request,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
) -> dict[str, object]:
    """Stream one shard's bytes through the API (checked like any dataset file, then counted)."""

    def load(session: Session) -> DatasetShard:
        dataset = dataset_shards.sharded_dataset(session, who.project_id, dataset_id)
        return dataset_shards.get_shard(session, dataset, index)

    return await uploads.stream_into(request, ctx, load)


@router.post("/{dataset_id}/seal", response_model=ManifestRead)
def seal_dataset(
    dataset_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> ManifestRead:
    """Mark the dataset ready once every shard 0…n-1 is uploaded; answers the manifest."""
    dataset = dataset_shards.sharded_dataset(session, who.project_id, dataset_id)
    shards = dataset_shards.seal(session, dataset)
    session.commit()
    return _manifest(dataset.id, dataset.status, shards)


@router.get("/{dataset_id}/manifest", response_model=ManifestRead)
def get_manifest(
    dataset_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> ManifestRead:
    dataset = dataset_shards.sharded_dataset(session, who.project_id, dataset_id)
    return _manifest(dataset.id, dataset.status, dataset_shards.list_shards(session, dataset.id))


def _manifest(dataset_id: str, status: str, shards: Sequence[DatasetShard]) -> ManifestRead:
    items = [ShardRead.model_validate(s) for s in shards]
    return ManifestRead.model_validate(
        {
            "dataset_id": dataset_id,
            "status": status,
            "samples": sum(s.samples or 0 for s in items),
            "shards": items,
        }
    )
