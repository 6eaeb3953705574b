"""Per-layer histograms of weights and FP32 activations with each quantizer's encoding range.

Weights are histogrammed from the parameter itself; activations from the bounded sample
collected by core/analysis/activations.py. ``render_histograms`` draws one PNG per quantizer for
the layers given (the analyzer passes the ranked layers first and caps the count: a model with
hundreds of quantizers would otherwise spend most of its report time in matplotlib).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.analysis import plots
from core.analysis.activations import TensorStats

BINS = 100


def _values(sim: Any, key: str, stats: dict[str, TensorStats]) -> np.ndarray:
    if ".param." in key:
        module_name, _, pname = key.rpartition(".param.")
        w = getattr(sim.model.get_submodule(module_name), pname, None)
        return w.detach().float().reshape(-1).cpu().numpy() if isinstance(w, torch.Tensor) else np.empty(0)
    s = stats.get(key)
    return s.values().numpy() if s is not None else np.empty(0)


def histogram_data(sim: Any, keys: list[str], stats: dict[str, TensorStats]) -> dict[str, dict[str, Any]]:
    """quantizer key → {"counts", "edges", "encoding_min", "encoding_max"} (JSON-ready lists)."""
    quantizers = sim.quantizers()
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = _values(sim, key, stats)
        if values.size == 0:
            continue
        counts, edges = np.histogram(values, bins=BINS)
        enc = quantizers[key].encoding
        as_int = enc is not None and quantizers[key].spec.dtype == "int"
        out[key] = {
            "counts": counts.tolist(),
            "edges": [float(e) for e in edges],
            "encoding_min": float(enc.min.min()) if as_int else None,
            "encoding_max": float(enc.max.max()) if as_int else None,
        }
    return out


def render_histograms(sim: Any, keys: list[str], stats: dict[str, TensorStats]) -> dict[str, bytes]:
    """quantizer key → PNG of its value histogram with the encoding range marked."""
    data = histogram_data(sim, keys, stats)
    images: dict[str, bytes] = {}
    for key, d in data.items():
        values = _values(sim, key, stats)
        images[key] = plots.histogram(values, d["encoding_min"], d["encoding_max"], key)
    return images
