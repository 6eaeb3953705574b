"""/v1/objects: the local store's signed URLs (embedded mode). The signature is the authorization."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from service.api.context import AppContext, app_context
from service.errors import NotFoundError, PayloadTooLargeError
from service.storage.local import LocalArtifactStore

# Reports are self-contained HTML with inline styles and SVG, and no script.
INLINE_POLICY = "sandbox; default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'"

router = APIRouter(prefix="/v1/objects", tags=["objects"], include_in_schema=False)


def _local(ctx: AppContext) -> LocalArtifactStore:
    if not isinstance(ctx.store, LocalArtifactStore):
        raise NotFoundError("object URLs are served by the object store in this deployment")
    return ctx.store


@router.get("/{key:path}")
def get_object(
    key: str,
    op: str = Query(),
    exp: str = Query(),
    sig: str = Query(),
    inline: str | None = Query(default=None, max_length=100),
    ctx: AppContext = Depends(app_context),
) -> Response:
    """The object as a download, or with ``inline`` (a signed Content-Type) for the browser to show.
    Inline objects are served sandboxed: this is the dashboard's origin, and a report must not run
    script in it."""
    store = _local(ctx)
    store.verify(op if op == "get" else "invalid", key, exp, sig, f"inline={inline}" if inline else "")
    path = store.local_path(key)
    if not path.is_file():
        raise NotFoundError("object not found")
    if inline:
        headers = {"Content-Security-Policy": INLINE_POLICY, "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=inline, headers=headers)
    return FileResponse(path, filename=key.rsplit("/", 1)[-1])


@router.put("/{key:path}")
async def put_object(
    key: str,
    request: Request,
    op: str = Query(),
    exp: str = Query(),
    sig: str = Query(),
    part: str | None = Query(default=None),
    upload_id: str | None = Query(default=None),
    ctx: AppContext = Depends(app_context),
) -> Response:
    store = _local(ctx)
    if op == "part":
        store.verify("part", key, exp, sig, f"part={part}&upload_id={upload_id}")
    else:
        store.verify(op if op == "put" else "invalid", key, exp, sig)
    fd, name = tempfile.mkstemp(dir=store.root / ".tmp")
    os.close(fd)
    tmp = Path(name)
    digest, size, limit = hashlib.md5(usedforsecurity=False), 0, ctx.settings.max_upload_bytes
    try:
        async with await anyio.open_file(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"body is over the {limit}-byte upload limit")
                digest.update(chunk)
                await fh.write(chunk)
        if op == "part" and part and part.isdigit() and upload_id:
            etag = await run_in_threadpool(store.write_part, upload_id, int(part), _chunks(tmp))
        else:
            target = store.local_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            etag = f'"{digest.hexdigest()}"'
    finally:
        tmp.unlink(missing_ok=True)
    return Response(status_code=200, headers={"ETag": etag})


def _chunks(path: Path):  # type: ignore[no-untyped-def]
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk
