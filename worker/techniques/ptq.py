"""``ptq``: the chosen post-training steps in a fixed order, then calibration.

Order: BN fold or CLE (on the FP32 graph) → QuantSim → SeqMSE weight ranges → AdaRound → calibration → bias correction (it
runs the quantized model, so it needs the encodings; calibrated again after it) → BN re-estimation
(the statistics then describe the quantized activations, as AIMET does after QAT). ``outlier_clip`` runs
on the calibrated sim, after bias correction: it narrows outlier-dominated activation ranges where the
model's output error says so (core/ptq/outlier_clip.py).
"""

from __future__ import annotations

import copy
from typing import Any

from core.errors import ConfigError
from worker.pipeline.context import JobContext, TechniqueResult
from worker.techniques import register_technique
from worker.techniques.quantsim import build_sim, calibrate

SUPPORTED = ("bn_fold", "cle", "seq_mse", "adaround", "bias_correction", "outlier_clip", "bn_reestimation")
BIAS_CORRECTION_METHODS = ("empirical", "analytical")


def _check_steps(steps: list[str], params: dict[str, Any]) -> None:
    missing = [s for s in steps if s not in SUPPORTED]
    if missing:
        raise ConfigError(
            f"PTQ steps {missing} are not available in this engine; available: {', '.join(SUPPORTED)}"
        )
    if "bn_reestimation" in steps and ("bn_fold" in steps or "cle" in steps):
        # Folding removes the BatchNorm layers whose statistics re-estimation would recompute.
        raise ConfigError(
            "PTQ step bn_reestimation needs the BatchNorm layers that bn_fold/cle fold away; "
            "choose bn_reestimation or bn_fold/cle"
        )
    method = params.get("bias_correction_method", "empirical")
    if method not in BIAS_CORRECTION_METHODS:
        raise ConfigError(
            f"params.bias_correction_method {method!r} is not supported; "
            f"accepted: {', '.join(BIAS_CORRECTION_METHODS)}"
        )


@register_technique("ptq")
def run_ptq(ctx: JobContext) -> TechniqueResult:
    """Apply ``params.steps`` and return the calibrated sim with per-step notes in the metrics.

    Params: ``steps`` (default ``["bn_fold", "cle"]``), ``adaround_iterations`` (1000),
    ``bias_correction_method`` (``empirical`` or ``analytical``), ``bias_correction_samples`` (512),
    ``bn_reestimation_batches`` (100).
    """
    steps = list(ctx.params.get("steps") or ["bn_fold", "cle"])
    _check_steps(steps, ctx.params)
    module: Any = copy.deepcopy(ctx.prepared)  # the FP32 graph stays the evaluation reference
    notes: dict[str, Any] = {}
    bn_stats: Any = None
    if "cle" in steps:
        from core.ptq.cle import equalize_model

        equalized = equalize_model(module, fold_bn=True)
        module = equalized.model
        # CLE rescales the layers after folding, so the folded BN statistics no longer describe their
        # inputs: analytical bias correction then falls back to the empirical method.
        notes["cle"] = "bn folded and equalized"
    elif "bn_fold" in steps:
        from core.ptq.bn_fold import fold_all_batch_norms

        folded = fold_all_batch_norms(module)
        module, bn_stats = folded.model, folded.bn_stats
        notes["bn_fold"] = "folded"
    ctx.monitor.progress(0.1)
    sim = build_sim(ctx, module)
    if "seq_mse" in steps:
        from core.ptq.seq_mse import apply_seq_mse

        seq = apply_seq_mse(sim, ctx.calib, cancel=ctx.cancel_check)
        notes["seq_mse"] = {"layers": len(seq.layers), "seconds": round(seq.seconds, 2)}
    if "adaround" in steps:
        from core.ptq.adaround import AdaroundConfig, apply_adaround

        iterations = int(ctx.params.get("adaround_iterations", 1000))
        result = apply_adaround(
            sim,
            ctx.calib,
            AdaroundConfig(num_iterations=iterations),
            progress=lambda f: ctx.monitor.progress(0.1 + 0.7 * f),
            cancel=ctx.cancel_check,
        )
        notes["adaround"] = {"layers": len(result.layers), "seconds": round(result.seconds, 2)}
    calibrate(ctx, sim)
    if "bias_correction" in steps:
        from core.ptq.bias_correction import correct_bias

        # The empirical method runs the quantized model, so it needs every encoding; the activation
        # ranges are then computed again because the corrected biases shift the layers' outputs.
        corrected = correct_bias(
            sim,
            ctx.calib,
            method=ctx.params.get("bias_correction_method", "empirical"),
            bn_stats=bn_stats,
            num_samples=int(ctx.params.get("bias_correction_samples", 512)),
        )
        notes["bias_correction"] = {"empirical": corrected.empirical, "analytical": corrected.analytical}
        calibrate(ctx, sim)
    if "outlier_clip" in steps:
        from core.ptq.outlier_clip import clip_activation_outliers

        clipped = clip_activation_outliers(sim, ctx.calib)
        notes["outlier_clip"] = {
            "searched": len(clipped.searched),
            "clipped": len(clipped.clipped),
            "seconds": round(clipped.seconds, 2),
        }
    if "bn_reestimation" in steps:
        from core.ptq.bn_reestimation import reestimate_bn_stats

        batches = int(ctx.params.get("bn_reestimation_batches", 100))
        handle = reestimate_bn_stats(sim.model, ctx.calib, num_batches=batches)  # type: ignore[attr-defined]
        notes["bn_reestimation"] = {"layers": handle.layers}
    return TechniqueResult(sim=sim, metrics={"ptq_steps": steps, "ptq": notes})
