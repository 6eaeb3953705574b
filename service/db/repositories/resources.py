"""Models, model versions, datasets and blobs, scoped to a project."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, ScalarSelect, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.models import Blob, Dataset, Model, ModelVersion
from service.db.pagination import paginate
from service.errors import ConflictError, InvalidInputError, NotFoundError


def create_model(session: Session, project_id: str, name: str, description: str = "") -> Model:
    """A new model; ConflictError when the project already has one named ``name``."""
    if session.scalar(select(Model.id).where(Model.project_id == project_id, Model.name == name)):
        raise ConflictError(f"model {name!r} already exists in this project", code="model_exists")
    model = Model(project_id=project_id, name=name, description=description)
    session.add(model)
    session.flush()
    return model


def get_model(session: Session, project_id: str, model_id: str) -> Model:
    """The project's model or NotFoundError (also for other projects' models)."""
    model = session.scalar(select(Model).where(Model.id == model_id, Model.project_id == project_id))
    if model is None:
        raise NotFoundError(f"model {model_id} not found")
    return model


def get_model_by_name(session: Session, project_id: str, name: str) -> Model:
    """The project's model named ``name`` or NotFoundError."""
    model = session.scalar(select(Model).where(Model.name == name, Model.project_id == project_id))
    if model is None:
        raise NotFoundError(f"model {name!r} not found")
    return model


def list_models(
    session: Session, project_id: str, limit: int, cursor: str | None, name: str | None = None
) -> tuple[Sequence[Model], str | None]:
    stmt = select(Model).where(Model.project_id == project_id)
    if name is not None:
        stmt = stmt.where(Model.name == name)
    return paginate(session, stmt, Model.id, limit, cursor)


def latest_versions(session: Session, model_ids: Sequence[str]) -> dict[str, int]:
    """model id -> highest ready version number."""
    if not model_ids:
        return {}
    rows = session.execute(
        select(ModelVersion.model_id, func.max(ModelVersion.version))
        .where(ModelVersion.model_id.in_(model_ids), ModelVersion.status == "ready")
        .group_by(ModelVersion.model_id)
    ).all()
    return {mid: int(v) for mid, v in rows}


def create_version(session: Session, model: Model, fmt: str) -> ModelVersion:
    """The next version (number = highest + 1) of ``model``, pending until its upload completes.

    A model's versions keep one format: schedules compare runs across versions, and an ONNX file and a
    torch.export program of "the same" model are different models to quantize.
    """
    other = session.scalar(
        select(ModelVersion.format)
        .where(
            ModelVersion.model_id == model.id, ModelVersion.format != fmt, ModelVersion.status != "rejected"
        )
        .limit(1)
    )
    if other is not None:
        raise ConflictError(
            f"model {model.name!r} holds {other} versions; a {fmt} file is another model: upload it under "
            f"another name (e.g. --model-name {model.name}-{fmt})",
            code="format_mismatch",
        )
    for _ in range(5):
        number = (
            session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id))
            or 0
        ) + 1
        version = ModelVersion(model_id=model.id, project_id=model.project_id, version=number, format=fmt)
        try:
            with session.begin_nested():
                session.add(version)
                session.flush()
            return version
        except IntegrityError:  # a concurrent create took this number
            continue
    raise ConflictError("too many concurrent version creations; retry", code="version_race")


def get_version(session: Session, project_id: str, model_id: str, number: int | None) -> ModelVersion:
    """Version ``number`` of the model, or its latest ready version when ``number`` is None."""
    stmt = select(ModelVersion).where(
        ModelVersion.model_id == model_id, ModelVersion.project_id == project_id
    )
    if number is None:
        found = session.scalar(
            stmt.where(ModelVersion.status == "ready").order_by(ModelVersion.version.desc()).limit(1)
        )
        if found is None:
            raise InvalidInputError(
                f"model {model_id} has no ready version; upload one first", code="model_not_ready"
            )
        return found
    found = session.scalar(stmt.where(ModelVersion.version == number))
    if found is None:
        raise NotFoundError(f"model {model_id} version {number} not found")
    return found


class JobInputs(NamedTuple):
    """A model version with the statuses of a job's datasets (None: missing or another project's)."""

    id: str
    version: int
    status: str
    calib_status: str | None
    eval_status: str | None
    blob_sha256: str | None  # the version's file (None: not uploaded yet)


def find_job_inputs(
    conn: Connection,
    project_id: str,
    model_id: str,
    number: int | None,
    calib_dataset_id: str,
    eval_dataset_id: str | None,
) -> JobInputs | None:
    """Version ``number`` of the model (or its latest ready version when None) and the statuses of the
    two datasets, all scoped to the project, in one query (the hot path of job creation); None when
    the project has no such version (:func:`get_version` says why)."""
    stmt = _INPUTS_LATEST if number is None else _INPUTS_NUMBERED
    params = {"project_id": project_id, "model_id": model_id, "number": number,
              "calib_id": calib_dataset_id, "eval_id": eval_dataset_id}  # fmt: skip
    row = conn.execute(stmt, params).first()
    return None if row is None else JobInputs(*row)


def _dataset_status(param: str) -> ScalarSelect[str]:
    return (
        select(Dataset.status)
        .where(Dataset.id == bindparam(param), Dataset.project_id == bindparam("project_id"))
        .scalar_subquery()
    )


# Built once (statement caching keys on the object): see find_job_inputs.
_INPUTS = select(
    ModelVersion.id,
    ModelVersion.version,
    ModelVersion.status,
    _dataset_status("calib_id").label("calib_status"),
    _dataset_status("eval_id").label("eval_status"),
    ModelVersion.blob_sha256,
).where(ModelVersion.model_id == bindparam("model_id"), ModelVersion.project_id == bindparam("project_id"))
_INPUTS_NUMBERED = _INPUTS.where(ModelVersion.version == bindparam("number"))
_INPUTS_LATEST = _INPUTS.where(ModelVersion.status == "ready").order_by(ModelVersion.version.desc()).limit(1)


def get_version_by_id(session: Session, project_id: str, version_id: str) -> ModelVersion:
    found = session.scalar(
        select(ModelVersion).where(ModelVersion.id == version_id, ModelVersion.project_id == project_id)
    )
    if found is None:
        raise NotFoundError(f"model version {version_id} not found")
    return found


def list_versions(session: Session, project_id: str, model_id: str) -> Sequence[ModelVersion]:
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_id == model_id, ModelVersion.project_id == project_id)
        .order_by(ModelVersion.version)
    ).all()


def create_dataset(session: Session, project_id: str, name: str, kind: str, fmt: str) -> Dataset:
    dataset = Dataset(project_id=project_id, name=name, kind=kind, format=fmt)
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, project_id: str, dataset_id: str) -> Dataset:
    """The project's dataset or NotFoundError."""
    found = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.project_id == project_id))
    if found is None:
        raise NotFoundError(f"dataset {dataset_id} not found")
    return found


def list_datasets(
    session: Session, project_id: str, limit: int, cursor: str | None, **filters: str | None
) -> tuple[Sequence[Dataset], str | None]:
    """A page of the project's datasets; ``filters`` (sha256, kind, format, status) narrow it, so a client
    finds stored content it can reuse instead of uploading it again."""
    stmt = select(Dataset).where(Dataset.project_id == project_id)
    columns = {"sha256": Dataset.blob_sha256, "kind": Dataset.kind, "format": Dataset.format,
               "status": Dataset.status}  # fmt: skip
    for key, value in filters.items():
        if value is not None:
            stmt = stmt.where(columns[key] == value)
    return paginate(session, stmt, Dataset.id, limit, cursor)


def project_has_blob(session: Session, project_id: str, sha256: str) -> bool:
    """Whether the project has a ready model version or dataset with this content."""
    for cls in (ModelVersion, Dataset):
        found = session.scalar(
            select(cls.id)
            .where(cls.project_id == project_id, cls.blob_sha256 == sha256, cls.status == "ready")
            .limit(1)
        )
        if found is not None:
            return True
    return False


def get_blob(session: Session, sha256: str) -> Blob | None:
    return session.get(Blob, sha256)


def add_blob(session: Session, sha256: str, size: int, storage_key: str) -> Blob:
    """Record a stored blob (idempotent: a concurrent insert of the same content is fine)."""
    existing = session.get(Blob, sha256)
    if existing is not None:
        return existing
    blob = Blob(sha256=sha256, size=size, storage_key=storage_key)
    try:
        with session.begin_nested():
            session.add(blob)
            session.flush()
    except IntegrityError:
        found = session.get(Blob, sha256)
        assert found is not None  # the row that beat us is there
        return found
    return blob
