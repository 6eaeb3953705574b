"""Stages 5–6: export the sim (model.onnx, model.encodings, model_qdq.onnx) and upload every output
under ``jobs/<job_id>/`` with one artifacts row each (re-uploads of a retried job replace rows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.db.models import Artifact, Job
from service.db.repositories.jobs import add_artifact
from service.storage import job_artifact_key
from worker.db import WorkerDb
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


def upload_all(ctx: JobContext, db: WorkerDb) -> None:
    """Write metrics.json, upload every artifact, record the rows (one transaction at the end)."""
    metrics_path = ctx.workdir / "metrics.json"
    metrics_path.write_text(json.dumps(ctx.metrics, indent=1, sort_keys=True, default=str))
    ctx.artifacts["metrics.json"] = metrics_path
    uploaded: list[tuple[str, str, int, str]] = []
    for i, (name, path) in enumerate(sorted(ctx.artifacts.items())):
        key = job_artifact_key(ctx.job_id, name)
        size, digest = upload(ctx.store, key, path, ctx.wsettings)
        uploaded.append((name, key, size, digest))
        ctx.monitor.progress((i + 1) / len(ctx.artifacts))

    def record(session: Session) -> None:
        job = session.get(Job, ctx.job_id)
        assert job is not None
        session.execute(delete(Artifact).where(Artifact.job_id == ctx.job_id))
        for name, key, size, digest in uploaded:
            ctype = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
            add_artifact(session, job, name, key, size, digest, ctype)

    db.write(record, "record artifacts")
