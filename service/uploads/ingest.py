"""Turning uploaded bytes into a checked, content-addressed blob attached to a model version or dataset.

Both upload paths end here: the bytes sit in a local temporary file (streamed there with flat memory,
hashed on the way), the structural check runs on that file, and the content is stored once under
``blobs/sha256/..`` (skipped when a blob with that hash already exists).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session

from service.db.models import Dataset, DatasetShard, ModelVersion, Upload
from service.db.repositories import resources
from service.errors import InvalidInputError, NotFoundError, PayloadTooLargeError, UploadRejectedError
from service.settings import Settings
from service.storage import ArtifactStore, blob_key
from service.uploads.budgets import UploadBudgets
from service.uploads.checks import check_file
from service.uploads.shards import shard_samples

Target = ModelVersion | Dataset | DatasetShard
CHUNK = 4 * 1024 * 1024


@contextmanager
def temp_file(settings: Settings) -> Iterator[Path]:
    """A temporary file path, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="lowbit-upload-")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def download_to(store: ArtifactStore, key: str, path: Path, max_bytes: int) -> tuple[str, int]:
    """Copy object ``key`` into ``path``; returns (sha256 hex, size)."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as fh:
        for chunk in store.get_stream(key, CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"upload exceeds the {max_bytes}-byte limit")
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest(), size


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def attach_file(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    target: Target,
    path: Path,
    sha256: str,
    size: int,
) -> Target:
    """Check ``path`` for ``target.format``, store it as a blob (once per content) and mark target ready.

    On a failed check the target becomes ``rejected`` and UploadRejectedError propagates (the caller
    commits the rejection before answering).
    """
    if target.status == "ready":
        raise InvalidInputError(
            "this upload already completed; create a new version", code="already_uploaded"
        )
    try:
        check_file(target.format, path, settings.max_upload_bytes, UploadBudgets.from_settings(settings))
        if isinstance(target, DatasetShard):
            target.samples = shard_samples(target.format, path)
    except UploadRejectedError as exc:
        target.status = "rejected"
        raise UploadRejectedError(f"{describe(target)}: {exc.message}") from None
    blob = resources.get_blob(session, sha256)
    if blob is None or not store.exists(blob.storage_key):
        key = blob_key(sha256)
        store.put_stream(key, _file_chunks(path))
        blob = resources.add_blob(session, sha256, size, key)
    target.blob_sha256, target.size, target.status = blob.sha256, size, "ready"
    return target


def describe(target: Target) -> str:
    """How the user names ``target``: "dataset 'calib' (01h...)" or "model version 3 (01h...)"."""
    if isinstance(target, Dataset):
        return f"dataset {target.name!r} ({target.id})"
    if isinstance(target, DatasetShard):
        return f"shard {target.index} of dataset {target.dataset_id}"
    return f"model version {target.version} ({target.id})"


def load_target(session: Session, upload: Upload) -> Target:
    """The model version, dataset or dataset shard an upload fills."""
    target: Target | None
    if upload.target_kind == "model_version":
        target = session.get(ModelVersion, upload.target_id)
    elif upload.target_kind == "dataset_shard":
        target = session.get(DatasetShard, upload.target_id)
    else:
        target = session.get(Dataset, upload.target_id)
    if target is None or target.project_id != upload.project_id:
        raise NotFoundError(f"upload {upload.id} not found")
    return target


def complete_upload(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    upload: Upload,
    parts: list[tuple[int, str]],
) -> Target:
    """Finish a presigned upload: assemble parts, verify size and sha256, check, store, attach."""
    if upload.status != "pending":
        raise InvalidInputError(f"upload {upload.id} is already {upload.status}", code="upload_not_pending")
    target = load_target(session, upload)
    if upload.multipart_id:
        if not parts:
            raise InvalidInputError("a multipart upload needs its parts: [{part_number, etag}, ...]")
        store.complete_multipart(upload.staging_key, upload.multipart_id, sorted(parts))
    stat = store.stat(upload.staging_key)
    if stat is None:
        raise InvalidInputError("nothing was uploaded to the presigned URL yet", code="upload_missing")
    try:
        if stat.size != upload.size:
            raise UploadRejectedError(f"uploaded {stat.size} bytes but {upload.size} were declared")
        with temp_file(settings) as path:
            sha256, size = download_to(store, upload.staging_key, path, settings.max_upload_bytes)
            if sha256 != upload.sha256:
                raise UploadRejectedError(
                    f"sha256 of the uploaded bytes is {sha256}, not the declared {upload.sha256}"
                )
            attach_file(session, store, settings, target, path, sha256, size)
        upload.status = "completed"
    except UploadRejectedError:
        upload.status = "failed"
        target.status = "rejected"
        raise
    finally:
        store.delete(upload.staging_key)
    return target
