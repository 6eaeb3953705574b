"""Applying a list of PTQ techniques around a QuantSim (``lowbit quantize --ptq cle,adaround``).

Graph-level techniques (``bn_fold``, ``cle``) edit the prepared FP32 graph before the sim is built;
sim-level ones (``seq_mse``, ``adaround``, ``bias_correction``) run on the sim before activation
calibration. The order of application is fixed (fold → CLE → SeqMSE → AdaRound → bias correction →
outlier clipping) whatever the order given; AdaRound after SeqMSE rounds on SeqMSE's weight ranges.
``outlier_clip`` (core/ptq/outlier_clip.py) calibrates, then narrows the outlier-dominated activation
ranges where the model's output error says so and freezes them, so the caller's calibration keeps them
(MiniLM-L6 W8A8, bench/minilm.py: embedding cosine 0.854 → 0.962 on min-max ranges, 0.970 with
``--quantized-input-passes 2`` after it; the QDQ model in ONNX Runtime 0.961 / 0.970).

``cle`` means DFQ (Nagel et al. 2019), whose recipe is CLE + high-bias absorption + bias correction: when
AdaRound is not also requested, bias correction follows CLE (``cle_bias_correction=False`` turns that
off). Equalization shrinks the per-tensor rounding error but leaves a per-channel mean shift in the
outputs, which bias correction removes (MobileNet-style digits net, W4A8 per-tensor weights, bench/ptq.py:
nearest 0.829, CLE 0.944, CLE + bias correction 0.989, FP32 0.996). AdaRound targets the same error and
more, so ``cle,adaround`` does not add it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from core.errors import ConfigError

GRAPH_TECHNIQUES = ("bn_fold", "cle")
SIM_TECHNIQUES = ("seq_mse", "adaround", "bias_correction", "outlier_clip")
TECHNIQUES = GRAPH_TECHNIQUES + SIM_TECHNIQUES


def parse_techniques(text: str | None) -> list[str]:
    """``"cle,adaround"`` -> ``["cle", "adaround"]``; raises ConfigError naming the accepted ones."""
    if not text:
        return []
    names = [t.strip().lower().replace("-", "_") for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in TECHNIQUES]
    if unknown:
        raise ConfigError(
            f"unknown PTQ technique(s) {', '.join(unknown)}; choose from {', '.join(TECHNIQUES)}"
        )
    return [t for t in TECHNIQUES if t in names]


def quantsim_with_ptq(
    loaded: Any,
    techniques: list[str],
    calib: Any,
    sim_kwargs: dict[str, Any],
    *,
    num_samples: int = 2000,
    batch_size: int = 32,
    progress: Callable[[float], None] | None = None,
    cle_bias_correction: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """A QuantSim of ``loaded`` (a core.io.LoadedModel) with ``techniques`` applied; activation encodings
    are not computed yet. Returns (sim, details per technique).

    With ``cle`` and without ``adaround``, bias correction runs too (DFQ) unless ``cle_bias_correction``
    is False; ``details["bias_correction"]["implied_by"]`` then says ``"cle"``."""
    from core.graph import prepare_model
    from core.ptq.adaround import AdaroundConfig, apply_adaround
    from core.ptq.bias_correction import correct_bias
    from core.ptq.bn_fold import fold_all_batch_norms
    from core.ptq.cle import equalize_model
    from core.ptq.outlier_clip import OutlierClipConfig, clip_activation_outliers
    from core.ptq.seq_mse import SeqMseConfig, apply_seq_mse
    from core.quantsim import QuantSim

    details: dict[str, Any] = {}
    bn_stats: dict[str, Any] = {}
    implied = cle_bias_correction and "cle" in techniques and "adaround" not in techniques
    if implied and "bias_correction" not in techniques:
        techniques = [*techniques, "bias_correction"]
    else:
        implied = False
    if not any(t in GRAPH_TECHNIQUES for t in techniques):
        sim = QuantSim(loaded, **sim_kwargs)
    else:
        examples = tuple(loaded.example_inputs)
        gm = prepare_model(loaded.graph_source, examples)
        if "cle" in techniques:
            cle = equalize_model(gm)
            bn_stats = cle.bn_fold.bn_stats if cle.bn_fold is not None else {}
            details["cle"] = {
                "cls_sets": len(cle.cls_sets),
                "relu6_replaced": cle.relu6_replaced,
                "clips_scaled": cle.clips_scaled,
            }
        else:
            fold = fold_all_batch_norms(gm)
            bn_stats = fold.bn_stats
            details["bn_fold"] = {"folded": len(fold.folded) + len(fold.folded_forward)}
        sim = QuantSim(gm, examples, prepared=True, **sim_kwargs)
        sim.use_io_of(loaded)
    if "seq_mse" in techniques:
        seq = apply_seq_mse(
            sim, calib, SeqMseConfig(num_samples=min(num_samples, 512), batch_size=batch_size)
        )
        details["seq_mse"] = {"seconds": round(seq.seconds, 2), "layers": len(seq.layers)}
    if "adaround" in techniques:
        config = AdaroundConfig(num_samples=num_samples, batch_size=batch_size)
        result = apply_adaround(sim, calib, config, progress=progress)
        details["adaround"] = {"seconds": round(result.seconds, 2), "layers": len(result.layers)}
    if "bias_correction" in techniques:
        sim.compute_encodings(calib, num_batches=max(1, -(-num_samples // batch_size)), batch_size=batch_size)
        method: Literal["empirical", "analytical"] = "analytical" if bn_stats else "empirical"
        bc = correct_bias(sim, calib, method=method, bn_stats=bn_stats or None, num_samples=num_samples)
        details["bias_correction"] = {"empirical": bc.empirical, "analytical": bc.analytical}
        if implied:
            details["bias_correction"]["implied_by"] = "cle"
    if "outlier_clip" in techniques:
        # After bias correction too: the corrected biases move the ranges it calibrated.
        sim.compute_encodings(calib, num_batches=max(1, -(-num_samples // batch_size)), batch_size=batch_size)
        oc = clip_activation_outliers(
            sim, calib, OutlierClipConfig(num_samples=max(16, batch_size), batch_size=batch_size), progress
        )
        details["outlier_clip"] = {
            "seconds": round(oc.seconds, 2),
            "searched": len(oc.searched),
            "clipped": {k: [round(a, 4), round(c, 4)] for k, (a, c) in oc.clipped.items()},
            "output_error": [round(oc.error_before, 6), round(oc.error_after, 6)],
        }
    return sim, details
