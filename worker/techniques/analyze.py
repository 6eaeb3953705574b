"""``analyze``: QuantAnalyzer report (per-layer sensitivity, ranges, histograms) as job artifacts."""

from __future__ import annotations

from worker.pipeline.context import JobContext, TechniqueResult
from worker.techniques import register_technique
from worker.techniques.quantsim import build_sim, calibrate


@register_technique("analyze")
def run_analyze(ctx: JobContext) -> TechniqueResult:
    """Calibrate, analyse, and return the report files under ``reports/``."""
    from core.analysis import QuantAnalyzer

    sim = build_sim(ctx)
    calibrate(ctx, sim)
    analyzer = QuantAnalyzer(sim, ctx.calib, eval_data=ctx.evaluation, metric="cosine")
    out = ctx.workdir / "reports"
    result = analyzer.analyze(
        out, progress=lambda _stage, f: ctx.monitor.progress(f), cancel=ctx.cancel_check
    )
    files = {f"reports/{p.relative_to(out)}": p for p in sorted(out.rglob("*")) if p.is_file()}
    # The dashboard's "most sensitive layers" table: rank, score and the analyzer's suggested action.
    top = [{k: row[k] for k in ("rank", "layer", "score", "action")} for row in result.ranking[:10]]
    return TechniqueResult(
        sim=sim,
        metrics={"analysis": {"metric": result.metric_name, "global": result.global_metrics, "top": top}},
        files=files,
    )
