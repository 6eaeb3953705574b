"""Matplotlib figures of the analysis, rendered off-screen (Agg) to PNG bytes.

Every function returns PNG bytes; the HTML report embeds them as base64 and the analyzer also
writes them to ``plots/``. Long layer lists are drawn as horizontal bars so names stay readable.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on workers; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

MAX_BARS = 60


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _height(n: int) -> float:
    return max(2.5, 0.22 * n + 1.2)


def global_bars(metrics: dict[str, float], metric_name: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(metrics)
    ax.bar(
        names, [metrics[n] for n in names], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][: len(names)]
    )
    lo = min(metrics.values())
    hi = max(metrics.values())
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    ax.set_ylabel(metric_name)
    ax.set_title("FP32 vs weights-only vs activations-only vs W+A")
    for i, n in enumerate(names):
        ax.annotate(f"{metrics[n]:.4g}", (i, metrics[n]), ha="center", va="bottom", fontsize=8)
    return _png(fig)


def sensitivity_bars(
    per_layer: dict[str, dict[str, float]], fp32: float, quantized: float, metric_name: str
) -> bytes:
    layers = list(per_layer)[:MAX_BARS]
    y = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(8, _height(len(layers))))
    ax.barh(
        y - 0.2, [per_layer[n]["only_this"] for n in layers], height=0.4, label="only this layer quantized"
    )
    ax.barh(
        y + 0.2,
        [per_layer[n]["all_but_this"] for n in layers],
        height=0.4,
        label="all but this layer quantized",
    )
    ax.axvline(fp32, color="k", ls="--", lw=1, label="FP32")
    ax.axvline(quantized, color="r", ls=":", lw=1, label="fully quantized")
    values = [v for n in layers for v in per_layer[n].values()] + [fp32, quantized]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo) or 1e-3
    ax.set_xlim(lo - pad, hi + pad)  # the differences matter, not the distance from zero
    ax.set_yticks(y, layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(metric_name)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Per-layer sensitivity")
    return _png(fig)


def range_bars(ranges: dict[str, dict[str, Any]], title: str) -> bytes:
    keys = list(ranges)[:MAX_BARS]
    y = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, _height(len(keys))))
    lo = [ranges[k]["min"] for k in keys]
    hi = [ranges[k]["max"] for k in keys]
    ax.barh(y, np.subtract(hi, lo), left=lo, height=0.6, color="#4c72b0", label="observed FP32 range")
    enc_lo = [ranges[k]["encoding_min"] if ranges[k]["encoding_min"] is not None else np.nan for k in keys]
    enc_hi = [ranges[k]["encoding_max"] if ranges[k]["encoding_max"] is not None else np.nan for k in keys]
    ax.scatter(enc_lo, y, marker="|", s=120, color="#c44e52", label="encoding min/max")
    ax.scatter(enc_hi, y, marker="|", s=120, color="#c44e52")
    ax.set_yticks(y, keys, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _png(fig)


def layer_error_bars(errors: dict[str, dict[str, float]]) -> bytes:
    layers = list(errors)[:MAX_BARS]
    y = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(8, _height(len(layers))))
    ax.barh(y, [errors[n]["sqnr_db"] for n in layers], color="#55a868")
    ax.set_yticks(y, layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output SQNR vs FP32 (dB, higher is better)")
    ax.set_title("Per-layer output error (network order)")
    return _png(fig)


def histogram(values: np.ndarray, enc_min: float | None, enc_max: float | None, title: str) -> bytes:
    """Histogram of values (log counts) with the encoding's representable range drawn on it."""
    fig, ax = plt.subplots(figsize=(5, 2.6))
    if values.size:
        ax.hist(values, bins=100, color="#4c72b0", log=True)
    if enc_min is not None and enc_max is not None:
        ax.axvline(enc_min, color="#c44e52", lw=1.5, label=f"encoding [{enc_min:.3g}, {enc_max:.3g}]")
        ax.axvline(enc_max, color="#c44e52", lw=1.5)
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    return _png(fig)
