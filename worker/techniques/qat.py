"""``qat``: calibrate, then the engine's built-in QAT loop on the job's training data (a sharded
dataset streamed from object storage, a training file, or — by default — the calibration data;
distillation from FP32 when the data has no labels). ``params.world_size`` > 1 runs the same
training in a process group started by torch's elastic launcher (worker/training/launch.py).
Checkpoints are mirrored to object storage keyed by the job, so a retried job resumes at the last
checkpoint (worker/pipeline/resume.py)."""

from __future__ import annotations

from worker.pipeline.context import JobContext, TechniqueResult
from worker.pipeline.resume import StateSync
from worker.techniques import register_technique
from worker.training.run import result_metrics, train


@register_technique("qat")
def run_qat(ctx: JobContext) -> TechniqueResult:
    """Fine-tune the calibrated sim with the job's QAT params (service.schemas.jobs.QatParams)."""
    from core.qat import finish_qat, list_checkpoints

    params = ctx.params
    if int(params.get("world_size") or 1) > 1 or int(params.get("nodes") or 1) > 1:
        from worker.training.launch import run_distributed

        return run_distributed(ctx)
    local = ctx.workdir / "qat-checkpoints"
    local.mkdir(parents=True, exist_ok=True)
    sync = StateSync(ctx.store, ctx.wsettings, ctx.job_id, "qat", local, owner=ctx.monitor)
    resumed = sync.pull()
    if resumed:
        ctx.monitor.log(f"resuming QAT from stored checkpoint {resumed}")

    def progress(step: int, total: int, loss: float) -> None:
        ctx.monitor.progress(min(1.0, step / max(1, total)))
        done = list_checkpoints(local)
        if done:
            sync.push(done[-1])

    sim, result = train(ctx, local, progress=progress, cancel=ctx.cancel_check)
    if result.resumed_from_step is not None and result.resumed_from_step >= result.steps:
        ctx.monitor.log(
            f"QAT finished in an earlier attempt (step {result.steps}); exporting its final checkpoint"
        )
    finish_qat(sim)
    return TechniqueResult(sim=sim, metrics={"qat": result_metrics(result)})
