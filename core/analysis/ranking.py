"""The ranked list of layers to look at first, each with a suggested action.

A layer's score is the metric it costs: the larger of (quantized metric with it excluded − fully
quantized metric) and (FP32 metric − metric with only it quantized). The suggested action follows
from which of its grids hurts more (quantizer SQNR) and from its weight ranges:

* ``per_channel`` — the weight grid is worse and per-tensor, with per-channel maxima spread ≥ 8×;
* ``cle`` — the same spread where per-channel is already on or not available (equalize ranges);
* ``higher_bitwidth`` — the weight or activation grid is simply too coarse (raise that bitwidth);
* ``exclude`` — the layer alone costs more than half of the whole drop and has no weights whose
  grid could be improved (e.g. softmax, normalization): keep it in float.
"""

from __future__ import annotations

from typing import Any

SPREAD_FOR_PER_CHANNEL = 8.0


def _grid_sqnr(keys: list[str], sqnr: dict[str, float], params: bool) -> float | None:
    values = [sqnr[k] for k in keys if k in sqnr and ((".param." in k) == params)]
    return min(values) if values else None


def suggest(
    layer: str,
    keys: list[str],
    cost: float,
    total_drop: float,
    sqnr: dict[str, float],
    weights: dict[str, dict[str, Any]],
) -> tuple[str, str]:
    """(action, reason) for one layer."""
    w_sqnr, a_sqnr = _grid_sqnr(keys, sqnr, True), _grid_sqnr(keys, sqnr, False)
    weight_info = [weights[k] for k in keys if k in weights]
    if w_sqnr is None and total_drop > 0 and cost > 0.5 * total_drop:
        return "exclude", f"costs {cost:.4g} of the {total_drop:.4g} total drop and has no weights to re-grid"
    if w_sqnr is not None and (a_sqnr is None or w_sqnr <= a_sqnr):
        spread = max((w["channel_spread"] for w in weight_info), default=1.0)
        per_tensor = any(w["granularity"] == "per_tensor" for w in weight_info)
        if spread >= SPREAD_FOR_PER_CHANNEL:
            if per_tensor:
                return (
                    "per_channel",
                    f"weight SQNR {w_sqnr:.1f} dB with channel maxima spread {spread:.1f}x under one scale",
                )
            return "cle", f"weight channel maxima spread {spread:.1f}x; equalize ranges across layers"
        return (
            "higher_bitwidth",
            f"weight grid SQNR {w_sqnr:.1f} dB is the weaker one; raise the weight bitwidth",
        )
    if a_sqnr is not None:
        return (
            "higher_bitwidth",
            f"activation grid SQNR {a_sqnr:.1f} dB is the weaker one; raise the activation bitwidth",
        )
    return "higher_bitwidth", "raise this layer's bitwidth"


def rank_layers(
    groups: dict[str, list[str]],
    global_metrics: dict[str, float],
    per_layer: dict[str, dict[str, float]],
    sqnr: dict[str, float],
    weights: dict[str, dict[str, Any]],
    layer_error: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Layers sorted by score (descending), each with score, action, reason and its numbers."""
    fp32, quantized = global_metrics["fp32"], global_metrics["quantized"]
    total_drop = fp32 - quantized
    rows: list[dict[str, Any]] = []
    for layer, keys in groups.items():
        s = per_layer.get(layer)
        if s is None:
            continue
        gain_if_excluded = s["all_but_this"] - quantized
        drop_alone = fp32 - s["only_this"]
        score = max(gain_if_excluded, drop_alone)
        action, reason = suggest(layer, keys, score, total_drop, sqnr, weights)
        rows.append(
            {
                "layer": layer,
                "score": score,
                "gain_if_excluded": gain_if_excluded,
                "drop_alone": drop_alone,
                "action": action,
                "reason": reason,
                "quantizers": keys,
                "output_sqnr_db": layer_error.get(layer, {}).get("sqnr_db"),
            }
        )

    # Ties (e.g. accuracy steps of 1/N) go to the layer whose output drifted further from FP32.
    def order(row: dict[str, Any]) -> tuple[float, float]:
        sqnr_db = row["output_sqnr_db"]
        return row["score"], -(float(sqnr_db) if sqnr_db is not None else 0.0)

    rows.sort(key=order, reverse=True)
    for i, row in enumerate(rows):
        row["rank"] = i + 1
    return rows
