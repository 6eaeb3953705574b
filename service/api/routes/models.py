"""/v1/models: models, their versions, and version uploads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
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
from service.api.routes import uploads
from service.db.models import ModelVersion
from service.db.repositories import resources
from service.errors import InvalidInputError
from service.schemas.common import MAX_INT32, Page
from service.schemas.resources import ModelCreate, ModelRead, ModelVersionCreate, ModelVersionRead

router = APIRouter(prefix="/v1/models", tags=["models"])


def _read(session: Session, model: object) -> ModelRead:
    out = ModelRead.model_validate(model)
    out.latest_version = resources.latest_versions(session, [out.id]).get(out.id)
    return out


@router.post("", status_code=201, response_model=ModelRead)
async def create_model(body: ModelCreate, idem: Idempotent = Depends(idempotent)) -> object:
    """Create a model (a name that groups versions)."""

    def create() -> object:
        model = resources.create_model(idem.session, idem.who.project_id, body.name, body.description)
        return ModelRead.model_validate(model).model_dump(mode="json")

    return await idem.run(create)


@router.get("", response_model=Page[ModelRead])
def list_models(
    name: str | None = None,
    cursor: str | None = None,
    limit: PageLimit = None,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> Page[ModelRead]:
    rows, nxt = resources.list_models(session, who.project_id, page_limit(ctx, limit), cursor, name)
    latest = resources.latest_versions(session, [m.id for m in rows])
    items = [
        ModelRead.model_validate(m).model_copy(update={"latest_version": latest.get(m.id)}) for m in rows
    ]
    return Page(items=items, next_cursor=nxt)


@router.get("/{model_id}", response_model=ModelRead)
def get_model(
    model_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> ModelRead:
    return _read(session, resources.get_model(session, who.project_id, model_id))


@router.post("/{model_id}/versions", status_code=201, response_model=ModelVersionRead)
async def create_version(
    model_id: str,
    body: ModelVersionCreate,
    idem: Idempotent = Depends(idempotent),
    ctx: AppContext = Depends(app_context),
) -> object:
    """Declare a new version. With ``size`` and ``sha256``, the answer's ``upload`` holds presigned URLs
    (or is null when identical content is already stored); otherwise PUT the bytes to ``.../content``."""
    if (body.size is None) != (body.sha256 is None):
        raise InvalidInputError("give both size and sha256 (presigned upload) or neither (streaming upload)")

    def create() -> object:
        model = resources.get_model(idem.session, idem.who.project_id, model_id)
        version = resources.create_version(idem.session, model, body.format)
        target = None
        if body.size is not None and body.sha256 is not None:
            target = uploads.declare(ctx, idem.session, "model_version", version, body.size, body.sha256)
        out = ModelVersionRead.model_validate(version)
        out.upload = target
        return out.model_dump(mode="json")

    return await idem.run(create)


@router.get("/{model_id}/versions", response_model=list[ModelVersionRead])
def list_versions(
    model_id: str, who: Principal = Depends(principal), session: Session = Depends(db_session)
) -> list[ModelVersionRead]:
    resources.get_model(session, who.project_id, model_id)
    return [
        ModelVersionRead.model_validate(v) for v in resources.list_versions(session, who.project_id, model_id)
    ]


@router.get("/{model_id}/versions/{number}", response_model=ModelVersionRead)
def get_version(
    model_id: str,
    number: int = Path(ge=1, le=MAX_INT32),
    who: Principal = Depends(principal),
    session: Session = Depends(db_session),
) -> ModelVersionRead:
    return ModelVersionRead.model_validate(resources.get_version(session, who.project_id, model_id, number))


@router.put(
    "/{model_id}/versions/{number}/content",
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def put_version_content(
    model_id: str,
    request: Request,
    number: int = Path(ge=1, le=MAX_INT32),
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
) -> dict[str, object]:
    """Stream the file of a pending version through the API (memory stays flat whatever the size).
    Optional header ``X-Content-SHA256`` is verified."""

    def load(session: Session) -> ModelVersion:
        return resources.get_version(session, who.project_id, model_id, number)

    return await uploads.stream_into(request, ctx, load)
