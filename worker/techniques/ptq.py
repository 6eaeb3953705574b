"""``ptq``: the chosen post-training steps in a fixed order (BN fold → CLE → AdaRound), then calibration.

Steps the engine does not provide yet (bn_reestimation, bias_correction) fail the job with a clear
ConfigError instead of being silently skipped.
"""

from __future__ import annotations

import copy
from typing import Any

from core.errors import ConfigError
from worker.pipeline.context import JobContext, TechniqueResult
from worker.techniques import register_technique
from worker.techniques.quantsim import build_sim, calibrate

SUPPORTED = ("bn_fold", "cle", "adaround")


@register_technique("ptq")
def run_ptq(ctx: JobContext) -> TechniqueResult:
    """Apply ``params.steps`` and return the calibrated sim with per-step notes in the metrics."""
    steps = list(ctx.params.get("steps") or ["bn_fold", "cle"])
    missing = [s for s in steps if s not in SUPPORTED]
    if missing:
        raise ConfigError(
            f"PTQ steps {missing} are not available in this engine; available: {', '.join(SUPPORTED)}"
        )
    module: Any = copy.deepcopy(ctx.prepared)  # the FP32 graph stays the evaluation reference
    notes: dict[str, Any] = {}
    if "cle" in steps:
        from core.ptq.cle import equalize_model

        module = equalize_model(module, fold_bn=True).model
        notes["cle"] = "bn folded and equalized"
    elif "bn_fold" in steps:
        from core.ptq.bn_fold import fold_all_batch_norms

        module = fold_all_batch_norms(module).model
        notes["bn_fold"] = "folded"
    ctx.monitor.progress(0.1)
    sim = build_sim(ctx, module)
    if "adaround" in steps:
        from core.ptq.adaround import AdaroundConfig, apply_adaround

        iterations = int(ctx.params.get("adaround_iterations", 1000))
        result = apply_adaround(
            sim,
            ctx.calib,
            AdaroundConfig(num_iterations=iterations),
            progress=lambda f: ctx.monitor.progress(0.1 + 0.8 * f),
            cancel=ctx.cancel_check,
        )
        notes["adaround"] = {"layers": len(result.layers), "seconds": round(result.seconds, 2)}
    calibrate(ctx, sim)
    return TechniqueResult(sim=sim, metrics={"ptq_steps": steps, "ptq": notes})
