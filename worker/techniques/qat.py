"""``qat``: calibrate, then the engine's built-in QAT loop (distillation from FP32 on the calibration
data, so no labels are needed). Checkpoints are mirrored to object storage keyed by the job, so a
retried job resumes at the last checkpoint (worker/pipeline/resume.py)."""

from __future__ import annotations

from typing import Any

from worker.pipeline.context import JobContext, TechniqueResult
from worker.pipeline.resume import StateSync
from worker.techniques import register_technique
from worker.techniques.quantsim import build_sim, calibrate

CHECKPOINT_EVERY = 50


@register_technique("qat")
def run_qat(ctx: JobContext) -> TechniqueResult:
    """Fine-tune the calibrated sim for ``params.epochs`` with ``params.learning_rate``."""
    from core.qat import list_checkpoints, qat

    params = ctx.params
    epochs = int(params.get("epochs", 1))
    sim: Any = build_sim(ctx)
    calibrate(ctx, sim)
    local = ctx.workdir / "qat-checkpoints"
    local.mkdir(parents=True, exist_ok=True)
    sync = StateSync(ctx.store, ctx.wsettings, ctx.job_id, "qat", local)
    resumed = sync.pull()
    if resumed:
        ctx.monitor.log(f"resuming QAT from stored checkpoint {resumed}")

    def progress(epoch: int, step: int, loss: float, metric: float | None) -> None:
        ctx.monitor.progress(min(1.0, (epoch + 1) / max(1, epochs)))
        done = list_checkpoints(local)
        if done:
            sync.push(done[-1])

    result = qat(
        sim,
        ctx.calib,
        epochs=epochs,
        lr=float(params.get("learning_rate", 1e-5)),
        mode="range_learning" if params.get("range_learning") else "regular",
        checkpoint_dir=str(local),
        checkpoint_every=CHECKPOINT_EVERY,
        resume=True,
        progress=progress,
        cancel=ctx.cancel_check,
    )
    return TechniqueResult(
        sim=sim,
        metrics={
            "qat": {
                "steps": result.steps,
                "final_loss": result.final_loss,
                "resumed_from_step": result.resumed_from_step,
                "seconds": round(result.seconds, 2),
            }
        },
    )
