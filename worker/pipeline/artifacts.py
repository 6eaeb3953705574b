"""Stages 5–6: export the sim (model.onnx, model.encodings, model_qdq.onnx), upload every output
under the attempt's own prefix ``jobs/<job_id>/attempt-<n>/``, and publish them with the job's success
in one conditional transaction (:func:`publish_results`): the artifact rows are replaced only while
the attempt still owns the job, so readers see one attempt's complete set, never a mix, and a late
attempt changes nothing of a finished job."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.db.models import Artifact
from service.db.repositories.jobs import add_artifact
from service.jobs import state
from service.jobs.finite_json import with_notes
from service.storage import ArtifactStore, attempt_artifact_key
from worker.fence import Fence, FenceLost
from worker.pipeline.context import JobContext
from worker.storage_io import upload

CONTENT_TYPES = {
    ".onnx": "application/octet-stream",
    ".encodings": "application/json",
    ".json": "application/json",
    ".html": "text/html",
    ".png": "image/png",
}


def export(ctx: JobContext, sim: Any) -> Path:
    """Export ``sim`` in the spec's encodings format; registers the three files as artifacts and
    returns the QDQ model path."""
    from core.export import export_sim

    out = ctx.workdir / "export"
    result = export_sim(sim, out, encoding_version=str(ctx.spec.get("encodings_format", "1.0.0")))
    ctx.artifacts["model.onnx"] = result.onnx
    ctx.artifacts["model.encodings"] = result.encodings
    if result.qdq_onnx is not None:
        ctx.artifacts["model_qdq.onnx"] = result.qdq_onnx
    for warning in result.warnings:
        ctx.monitor.log(f"export: {warning}", level="warning")
    return result.qdq_onnx if result.qdq_onnx is not None else result.onnx


@dataclass(frozen=True)
class Uploaded:
    """One output stored in object storage, not yet published."""

    name: str
    key: str
    size: int
    sha256: str


def upload_all(ctx: JobContext) -> list[Uploaded]:
    """Write metrics.json and upload every artifact under this attempt's prefix (checked against the
    fence before each object: a late attempt stops at once); returns what to publish."""
    metrics_path = ctx.workdir / "metrics.json"
    # The same finite metrics (null + note for NaN/Infinity) as the job row gets: metrics.json is JSON.
    ctx.metrics = with_notes(json.loads(json.dumps(ctx.metrics, default=str)))
    metrics_path.write_text(json.dumps(ctx.metrics, indent=1, sort_keys=True, allow_nan=False))
    ctx.artifacts["metrics.json"] = metrics_path
    fence: Fence = ctx.monitor.fence
    for i, (name, path) in enumerate(sorted(ctx.artifacts.items())):
        if not ctx.monitor.still_owns():
            raise FenceLost(f"upload of {name} refused: {fence} no longer owns the job")
        key = attempt_artifact_key(ctx.job_id, fence.attempt, name)
        size, digest = upload(ctx.store, key, path, ctx.wsettings, total_s=ctx.wsettings.results_retry_s)
        ctx.uploaded.append(Uploaded(name, key, size, digest))
        ctx.monitor.progress((i + 1) / len(ctx.artifacts))
    return list(ctx.uploaded)


def publish_results(
    session: Session, fence: Fence, uploaded: list[Uploaded], metrics: dict[str, Any]
) -> bool:
    """In the caller's transaction: when ``fence`` still owns the job, replace its artifact rows with
    ``uploaded`` and mark it succeeded (or what a cancel request makes of it); False (nothing written)
    when the job was claimed again or finished meanwhile."""
    job = fence.lock(session)
    if job is None:
        return False
    session.execute(delete(Artifact).where(Artifact.job_id == fence.job_id))
    for item in uploaded:
        ctype = CONTENT_TYPES.get(Path(item.name).suffix, "application/octet-stream")
        add_artifact(session, job, item.name, item.key, item.size, item.sha256, ctype)
    state.transition(session, job, state.SUCCEEDED, metrics=metrics, stage="done", message="done")
    return True


def discard(store: ArtifactStore, uploaded: list[Uploaded]) -> None:
    """Delete what an attempt uploaded but never published (it lost its job): best effort, since
    nothing points at these keys."""
    for item in uploaded:
        # An unreachable store leaves garbage under the attempt's prefix: harmless, nothing reads it.
        with contextlib.suppress(Exception):
            store.delete(item.key)
