"""The stage sequence of a job: fetch → prepare → technique → export → evaluate → upload.

Export comes before evaluation because the ONNX Runtime metric runs the exported QDQ model.
"""

from __future__ import annotations

import time
from typing import Any

from core.errors import CancelledError
from worker.db import WorkerDb
from worker.fence import FenceLost
from worker.pipeline.artifacts import export, upload_all
from worker.pipeline.context import JobContext
from worker.pipeline.evaluate import evaluate
from worker.pipeline.fetch import fetch_inputs
from worker.pipeline.prepare import prepare_inputs
from worker.techniques import technique

# Share of the whole job per stage (for the progress fraction and the ETA).
STAGES: dict[str, float] = {
    "fetch": 0.05,
    "prepare": 0.10,
    "technique": 0.60,
    "export": 0.10,
    "evaluate": 0.10,
    "upload": 0.05,
}
ENGINE_STAGES = ("prepare", "technique", "export", "evaluate")


def run_pipeline(ctx: JobContext, db: WorkerDb) -> dict[str, Any]:
    """Run every stage of the job in ``ctx``; returns the metrics stored with the job.

    The outputs are uploaded (``ctx.uploaded``) but not published: the caller publishes them with the
    job's success in one transaction (artifacts.publish_results). Raises the engine's errors
    (LowbitError subclasses), CancelledError when a cancel was seen, FenceLost when the attempt lost
    its job, and InfrastructureError when the database or the object store stayed unreachable.
    """
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        if ctx.cancel_check():
            raise CancelledError(f"cancelled before stage {name}")
        timings[name] = time.perf_counter()
        ctx.monitor.enter(name)
        if ctx.monitor.lost:
            raise FenceLost(f"stage {name} not started: {ctx.monitor.fence} no longer owns the job")

    stage("fetch")
    fetch_inputs(ctx, db)
    stage("prepare")
    prepare_inputs(ctx)
    stage("technique")
    run = technique(str(ctx.spec["technique"]))
    result = run(ctx)
    ctx.metrics.update(result.metrics)
    ctx.artifacts.update(result.files)
    qdq = None
    if result.sim is not None and ctx.spec["technique"] != "analyze":
        stage("export")
        qdq = export(ctx, result.sim)
    if result.sim is not None:
        stage("evaluate")
        data = ctx.evaluation if ctx.evaluation is not None else ctx.calib
        ctx.metrics["evaluation"] = evaluate(
            result.sim, ctx.loaded.module, data, qdq, ctx.device, ctx.spec.get("eval_metric")
        )
        ctx.metrics["evaluation"]["data"] = "eval" if ctx.evaluation is not None else "calib"
        ctx.monitor.log(f"evaluation: {ctx.metrics['evaluation']}")
    stage("upload")
    now = time.perf_counter()
    ends = [*list(timings.values())[1:], now]
    ctx.metrics["stage_seconds"] = {
        k: round(e - s, 3) for (k, s), e in zip(timings.items(), ends, strict=True)
    }
    ctx.metrics["engine_seconds"] = round(
        sum(v for k, v in ctx.metrics["stage_seconds"].items() if k in ENGINE_STAGES), 3
    )
    ctx.metrics["device"] = ctx.device
    upload_all(ctx)
    return ctx.metrics
