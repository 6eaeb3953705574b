"""``autoquant``: the engine's staged PTQ search against the job's accuracy target.

The metric is top-1 accuracy on labelled evaluation data, else AutoQuant's label-free metric. The
stage cache is mirrored to object storage keyed by the job, so a job retried after a crash skips the
stages it already finished (worker/pipeline/resume.py).
"""

from __future__ import annotations

from typing import Any

from core.errors import LowbitError
from worker.pipeline.context import JobContext, TechniqueResult
from worker.pipeline.resume import StateSync
from worker.techniques import register_technique


def accuracy_on(data: Any, device: str, batch_size: int = 256) -> Any:
    """eval_fn(model) -> top-1 accuracy of the first output on labelled ``data``."""
    import torch

    def score(model: Any) -> float:
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in data.labeled_batches(batch_size):
                out = model(*(t.to(device) for t in inputs))
                out = out[0] if isinstance(out, tuple | list) else out
                correct += int((out.argmax(-1).cpu() == labels.reshape(-1)).sum())
                total += int(labels.numel())
        return correct / max(total, 1)

    return score


def allowed_drop(spec: dict[str, Any]) -> float:
    """The spec's allowed accuracy drop; 0 means zero (only a missing value takes the 0.01 default)."""
    value = spec.get("allowed_accuracy_drop")
    return 0.01 if value is None else float(value)


@register_technique("autoquant")
def run_autoquant(ctx: JobContext) -> TechniqueResult:
    """Run AutoQuant; the best stage's sim is exported and evaluated by the pipeline."""
    from core.autoquant import autoquant
    from core.ptq.adaround import AdaroundConfig
    from core.runtime_verdict import deployed_scorer

    labelled = ctx.evaluation is not None and ctx.evaluation.labels is not None
    cache = ctx.workdir / "autoquant-cache"
    cache.mkdir(parents=True, exist_ok=True)
    sync = StateSync(ctx.store, ctx.wsettings, ctx.job_id, "autoquant", cache, owner=ctx.monitor)
    if sync.pull() is not None:
        ctx.monitor.log("resuming AutoQuant from its stored stage cache")
    stages = ["prepare"]

    def progress(stage: str, fraction: float) -> None:
        if stage != stages[-1]:
            stages.append(stage)
            sync.push_files()  # the previous stage's cache entry is complete
            ctx.monitor.log(f"autoquant stage {stage}")
        ctx.monitor.progress(min(0.95, (len(stages) - 1 + fraction) / 8))

    out = ctx.workdir / "autoquant"
    spec = ctx.spec
    result = autoquant(
        ctx.loaded,
        ctx.calib,
        accuracy_on(ctx.evaluation, ctx.device) if labelled else None,
        allowed_drop(spec),
        param_bw=int(spec.get("param_bw", 8)),
        output_bw=int(spec.get("output_bw", 8)),
        config=spec.get("quantsim_config") or spec.get("preset") or None,
        adaround=AdaroundConfig(num_iterations=int(ctx.params.get("adaround_iterations", 1000))),
        eval_data=None if labelled else (ctx.evaluation or ctx.calib),
        out_dir=out,
        cache_dir=cache,
        export=False,
        progress=progress,
        cancel=ctx.cancel_check,
        # With eval data the target is checked on what ships: the QDQ model in ONNX Runtime.
        deployed_score=deployed_scorer(ctx.evaluation) if ctx.evaluation is not None else None,
    )
    sync.push_files()
    if result.sim is None:
        raise LowbitError(f"AutoQuant found no quantized model to export: {result.message}")
    files = {f"reports/{p.name}": p for p in (result.report_json, result.report_html) if p is not None}
    report = result.to_report()
    summary = {
        k: report[k]
        for k in ("fp32_score", "target", "best_stage", "best_score", "target_met", "message", "metric")
    }
    summary["stages"] = [{"name": s["name"], "status": s["status"], "score": s["score"], "cached": s["cached"],
                          "seconds": s["seconds"]} for s in report["stages"]]  # fmt: skip
    return TechniqueResult(sim=result.sim.to(ctx.device), metrics={"autoquant": summary}, files=files)
