"""Stage 1: fetch the job's model and data blobs from object storage into the job's temp folder."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Blob, Dataset, DatasetShard, Job, ModelVersion
from service.uploads.checks import check_file
from worker.db import WorkerDb
from worker.pipeline.context import JobContext
from worker.storage_io import download


class InputMissingError(RuntimeError):
    """An input of the job is not in the database or the object store (deleted after submission)."""


def _blob_key(session: Session, sha256: str | None, what: str) -> str:
    blob = session.get(Blob, sha256) if sha256 else None
    if blob is None:
        raise InputMissingError(f"{what} has no stored content")
    return blob.storage_key


def fetch_inputs(ctx: JobContext, db: WorkerDb) -> None:
    """Download model, calibration and (optional) evaluation data; sets ``ctx.*_path``."""

    def keys(session: Session) -> dict[str, tuple[str, str]]:
        job = session.get(Job, ctx.job_id)
        if job is None:
            raise InputMissingError(f"job {ctx.job_id} vanished")
        version = session.get(ModelVersion, job.model_version_id)
        if version is None:
            raise InputMissingError(f"model version {job.model_version_id} not found")
        found = {"model": (_blob_key(session, version.blob_sha256, "the model version"), version.format)}
        for role, dataset_id in (("calib", job.calib_dataset_id), ("eval", job.eval_dataset_id)):
            if dataset_id is None:
                continue
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise InputMissingError(f"{role} dataset {dataset_id} not found")
            found[role] = (_blob_key(session, dataset.blob_sha256, f"dataset {dataset_id}"), dataset.format)
        train_id = ctx.spec.get("train_dataset_id")
        train = session.get(Dataset, train_id) if train_id else None
        if train_id and train is None:
            raise InputMissingError(f"training dataset {train_id} not found")
        if train is not None and train.format == "sharded":
            ctx.train_manifest = _manifest(session, train)
        elif train is not None:
            found["train"] = (_blob_key(session, train.blob_sha256, f"dataset {train_id}"), train.format)
        return found

    found = db.write(keys, "read job inputs")
    inputs = ctx.workdir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for i, (role, (key, fmt)) in enumerate(found.items()):
        try:
            path = download(ctx.store, key, inputs / f"{role}.{fmt}", ctx.wsettings)
        except KeyError:
            raise InputMissingError(f"the {role} object {key} is missing from the object store") from None
        # The upload check again, before anything is loaded: a blob stored before a check existed,
        # or by another path, must not size an allocation (UploadRejectedError fails the job at once).
        check_file(fmt, path, ctx.budgets.max_file_bytes, ctx.budgets)
        setattr(ctx, f"{role}_path", path)
        ctx.monitor.progress((i + 1) / len(found))


def _manifest(session: Session, dataset: Dataset) -> dict[str, object]:
    """A sharded dataset as a core.qat.ShardManifest JSON: object keys are the locators (the shards
    are streamed from object storage while training, never downloaded whole)."""
    shards = session.scalars(
        select(DatasetShard).where(DatasetShard.dataset_id == dataset.id).order_by(DatasetShard.index)
    ).all()
    return {
        "shards": [
            {"locator": _blob_key(session, s.blob_sha256, f"shard {s.index} of dataset {dataset.id}"),
             "samples": int(s.samples or 0), "format": s.format}
            for s in shards
        ]
    }  # fmt: skip
