"""Upload endpoints shared by models and datasets: presigned declarations, completion, streaming bodies."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.context import AppContext, Principal, app_context, principal
from service.db.base import new_id
from service.db.models import Upload
from service.db.repositories import resources
from service.errors import InvalidInputError, NotFoundError, PayloadTooLargeError, UploadRejectedError
from service.schemas.common import UploadComplete, UploadTarget
from service.storage import upload_key
from service.uploads.ingest import Target, attach_file, complete_upload, download_to, temp_file

# Loads the (project-scoped) target of a streaming upload in a given session.
TargetLoader = Callable[[Session], Target]

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
_BUFFER = 4 * 1024 * 1024


def declare(
    ctx: AppContext, session: Session, kind: str, target: Target, size: int, sha256: str
) -> UploadTarget | None:
    """Prepare presigned URLs for ``target``'s bytes; None when identical content is already stored
    (then the target is checked and attached at once)."""
    settings, store = ctx.settings, ctx.store
    if size > settings.max_upload_bytes:
        raise PayloadTooLargeError(f"size {size} is over the {settings.max_upload_bytes}-byte upload limit")
    # The no-upload shortcut only for content this project already uploaded itself: knowing another
    # project's hash must not grant its bytes. (Storage still keeps one copy per content.)
    blob = (
        resources.get_blob(session, sha256)
        if resources.project_has_blob(session, target.project_id, sha256)
        else None
    )
    if blob is not None and blob.size == size and store.exists(blob.storage_key):
        with temp_file(settings) as path:
            download_to(store, blob.storage_key, path, settings.max_upload_bytes)
            attach_file(session, store, settings, target, path, sha256, size)
        return None
    upload_id = new_id()
    upload = Upload(
        id=upload_id,
        project_id=target.project_id,
        target_kind=kind,
        target_id=target.id,
        staging_key=upload_key(upload_id),
        size=size,
        sha256=sha256,
    )
    session.add(upload)
    expiry = settings.presign_expiry_s
    out = UploadTarget(
        upload_id=upload.id, method="put", complete_url=f"/v1/uploads/{upload.id}/complete", expires_in=expiry
    )
    if size > settings.multipart_part_bytes:
        count = math.ceil(size / settings.multipart_part_bytes)
        if count > 10_000:
            raise PayloadTooLargeError(
                "the file needs more than 10000 parts; raise LOWBIT_MULTIPART_PART_BYTES"
            )
        upload.multipart_id = store.create_multipart(upload.staging_key)
        out.method, out.part_size = "multipart", settings.multipart_part_bytes
        out.part_urls = [
            store.presign_part(upload.staging_key, upload.multipart_id, n, expiry)
            for n in range(1, count + 1)
        ]
    else:
        out.url = store.presign_put(upload.staging_key, expiry)
    return out


@router.post("/{upload_id}/complete", responses={422: {"description": "rejected upload"}})
def complete(
    upload_id: str,
    body: UploadComplete,
    who: Principal = Depends(principal),
    ctx: AppContext = Depends(app_context),
) -> dict[str, object]:
    """Verify size and sha256 of a presigned upload, run the structural checks, and attach the file."""
    with ctx.sessions() as session:
        upload = session.scalar(
            select(Upload).where(Upload.id == upload_id, Upload.project_id == who.project_id)
        )
        if upload is None:
            raise NotFoundError(f"upload {upload_id} not found")
        try:
            target = complete_upload(
                session, ctx.store, ctx.settings, upload, [(p.part_number, p.etag) for p in body.parts]
            )
        except UploadRejectedError:
            session.commit()  # keep the rejected status
            raise
        session.commit()
        return {
            "upload_id": upload.id,
            "status": target.status,
            "sha256": target.blob_sha256,
            "size": target.size,
        }


async def receive_to_file(request: Request, ctx: AppContext, path: Path) -> tuple[str, int]:
    """Stream the request body into ``path`` with flat memory; returns (sha256, size)."""
    limit = ctx.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte upload limit")
    digest, size = hashlib.sha256(), 0
    buffer = bytearray()
    async with await anyio.open_file(path, "wb") as fh:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"body is over the {limit}-byte upload limit")
            digest.update(chunk)
            buffer += chunk
            if len(buffer) >= _BUFFER:
                await fh.write(bytes(buffer))
                buffer.clear()
        if buffer:
            await fh.write(bytes(buffer))
    if size == 0:
        raise InvalidInputError("empty body; send the file's bytes", code="empty_upload")
    expected = request.headers.get("x-content-sha256")
    if expected and expected.lower() != digest.hexdigest():
        raise UploadRejectedError(f"sha256 of the body is {digest.hexdigest()}, not {expected}")
    return digest.hexdigest(), size


async def stream_into(request: Request, ctx: AppContext, load: TargetLoader) -> dict[str, object]:
    """The body of ``PUT .../content``: stream to a temp file, then check, store and attach."""
    await run_in_threadpool(_load_pending, ctx, load)
    fd, name = tempfile.mkstemp(prefix="lowbit-upload-")
    os.close(fd)
    path = Path(name)
    try:
        sha256, size = await receive_to_file(request, ctx, path)
        return await run_in_threadpool(_attach, ctx, load, path, sha256, size)
    finally:
        path.unlink(missing_ok=True)


def _load_pending(ctx: AppContext, load: TargetLoader) -> None:
    with ctx.sessions() as session:
        target = load(session)
        if target.status == "ready":
            raise InvalidInputError(
                "this upload already completed; create a new version", code="already_uploaded"
            )


def _attach(ctx: AppContext, load: TargetLoader, path: Path, sha256: str, size: int) -> dict[str, object]:
    with ctx.sessions() as session:
        target = load(session)
        try:
            attach_file(session, ctx.store, ctx.settings, target, path, sha256, size)
        except UploadRejectedError:
            session.commit()
            raise
        session.commit()
        return {"status": target.status, "sha256": target.blob_sha256, "size": target.size}
