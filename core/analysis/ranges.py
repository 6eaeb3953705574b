"""Per-layer weight and activation ranges: observed FP32 min/max next to the encoding's min/max.

Weights also report the spread of their per-output-channel absolute maxima (max / median): a
large spread under a per-tensor encoding is what per-channel quantization or CLE fixes.
"""

from __future__ import annotations

from typing import Any

import torch

from core.analysis.activations import TensorStats


def _encoding_range(q: Any) -> tuple[float | None, float | None]:
    enc = q.encoding
    if enc is None or q.spec.dtype != "int":
        return None, None
    return float(enc.min.min()), float(enc.max.max())


def weight_ranges(sim: Any) -> dict[str, dict[str, Any]]:
    """param quantizer key → min, max, channel_spread, encoding_min/max, granularity, bitwidth."""
    out: dict[str, dict[str, Any]] = {}
    for key, q in sim.param_quantizers().items():
        if not q.enabled:
            continue
        module_name, _, pname = key.rpartition(".param.")
        w = getattr(sim.model.get_submodule(module_name), pname, None)
        if not isinstance(w, torch.Tensor) or w.numel() == 0:
            continue
        w = w.detach().float()
        channel_absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1) if w.dim() > 1 else w.abs()
        median = float(channel_absmax.median())
        enc_min, enc_max = _encoding_range(q)
        out[key] = {
            "layer": module_name,
            "min": float(w.min()),
            "max": float(w.max()),
            "channel_spread": float(channel_absmax.max()) / median if median > 0 else float("inf"),
            "encoding_min": enc_min,
            "encoding_max": enc_max,
            "granularity": q.spec.granularity,
            "bitwidth": q.spec.bitwidth,
        }
    return out


def activation_ranges(sim: Any, stats: dict[str, TensorStats]) -> dict[str, dict[str, Any]]:
    """activation quantizer key → observed FP32 min/max and the encoding's min/max."""
    quantizers = sim.activation_quantizers()
    out: dict[str, dict[str, Any]] = {}
    for key, s in stats.items():
        if s.count == 0:
            continue
        enc_min, enc_max = _encoding_range(quantizers[key])
        out[key] = {
            "layer": key.rsplit(".", 2)[0],
            "min": s.min,
            "max": s.max,
            "encoding_min": enc_min,
            "encoding_max": enc_max,
            "bitwidth": quantizers[key].spec.bitwidth,
        }
    return out
