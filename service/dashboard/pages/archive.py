"""A zip of all of a job's artifacts, one download instead of one button per file."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from service.api.context import AppContext, app_context, db_session
from service.dashboard.auth import Viewer, current_viewer
from service.dashboard.router import DashboardRoute
from service.db.repositories import jobs as jobs_repo
from service.errors import NotFoundError

router = APIRouter(route_class=DashboardRoute)

# The zip is built in a spooled file: small archives stay in memory, large ones (models) go to disk.
_SPOOL_BYTES = 32 << 20


def _safe_name(name: str) -> str:
    """An archive member name that cannot escape the folder it is unpacked into."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "artifact"


@router.get("/jobs/{job_id}/artifacts.zip")
def artifacts_zip(
    job_id: str,
    viewer: Viewer = Depends(current_viewer),
    ctx: AppContext = Depends(app_context),
    session: Session = Depends(db_session),
) -> StreamingResponse:
    """Every artifact of the job in one zip named after the job."""
    job = jobs_repo.get_job(session, viewer.project_id, job_id)
    artifacts = list(jobs_repo.list_artifacts(session, job))
    if not artifacts:
        raise NotFoundError(f"job {job_id} has no artifacts")
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115  closed by _chunks
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for a in artifacts:
            with archive.open(_safe_name(a.name), "w", force_zip64=True) as member:
                for chunk in ctx.store.get_stream(a.storage_key):
                    member.write(chunk)
    size = spool.tell()
    spool.seek(0)
    headers = {
        "Content-Disposition": f'attachment; filename="lowbit-job-{job.id}.zip"',
        "Content-Length": str(size),
    }
    return StreamingResponse(_chunks(spool), media_type="application/zip", headers=headers)


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spool.read(1 << 20):
            yield chunk
    finally:
        spool.close()
