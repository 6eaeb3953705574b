"""Clipping activation outliers where the model's output says it pays (massive activations in transformers).

A few activations of a transformer's residual stream are "massive" (Sun et al. 2024): in MiniLM-L6 the
FFN output and the residual add of layers 0–3 reach 50–220 in one channel of the [CLS] token while
every other value stays within ±5. A per-tensor 8-bit grid that covers the outlier has a step of ~0.9,
which rounds the rest of the tokens to a few levels; clipping the outlier instead changes only the
token that carries it, and the LayerNorm after the add sees nearly the same thing: it divides each
token by its own spread, so a token dominated by one channel normalizes to nearly the same vector
whether that channel holds 220 or 40. No range rule on the tensor alone (min-max, SQNR, MSE,
percentile) can know that: it depends on what follows.

``clip_activation_outliers`` therefore picks the clipping threshold by the error of the *model's
outputs* against FP32 on a few calibration batches, with every quantizer active: for each activation
quantizer whose observed range is dominated by outliers (``max|x|`` above ``ratio`` × the 99.9th
percentile of ``|x|``), it tries the observed min-max range and narrower symmetric clips ``f · max|x|``
against the range the scheme chose, and keeps the one with the smallest output error, in graph order (each decision sees the ones before).
The result is an ordinary encoding: the exported QDQ model clips exactly the same way. Clipped
quantizers are frozen so a later ``compute_encodings`` keeps them.

>>> sim.compute_encodings(calib)                                              # doctest: +SKIP
>>> result = clip_activation_outliers(sim, calib, OutlierClipConfig())        # doctest: +SKIP
>>> result.clipped["bert.encoder.layer.0.output.add.output.0"]               # doctest: +SKIP
(223.2, 31.3)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.ptq.calibration_batches import materialize_batches
from core.quant.encoding import Encoding
from core.quant.quantizer import Quantizer
from core.quant.range_setters.base import SENTINEL, SENTINEL_HEADROOM

# Largest number of values per tensor used for the percentile (a uniform subsample beyond it).
_MAX_QUANTILE_VALUES = 1 << 20


@dataclass(frozen=True)
class OutlierClipConfig:
    """ratio: searched when max|x| > ratio × the 99.9th percentile of |x|; fractions: the clips tried, as
    fractions of max|x|; num_samples/batch_size: calibration samples that score each candidate."""

    ratio: float = 8.0
    fractions: tuple[float, ...] = (0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.09)
    num_samples: int = 16
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.ratio < 1.0:
            raise ConfigError(f"outlier ratio must be ≥ 1, got {self.ratio}")
        if not self.fractions or not all(0.0 < f < 1.0 for f in self.fractions):
            raise ConfigError(f"clip fractions must lie in (0, 1), got {self.fractions}")
        if self.num_samples < 1 or self.batch_size < 1:
            raise ConfigError("num_samples and batch_size must be ≥ 1")


@dataclass
class OutlierClipResult:
    """clipped: quantizer key → (max|x| observed, max|range| chosen; chosen ≤ observed); searched: every
    quantizer tried."""

    clipped: dict[str, tuple[float, float]] = field(default_factory=dict)
    searched: list[str] = field(default_factory=list)
    error_before: float = 0.0
    error_after: float = 0.0
    seconds: float = 0.0


class _Recorder(nn.Module):
    """Stands in for an activation quantizer for one pass: records |x| statistics, then quantizes."""

    def __init__(self, inner: Quantizer) -> None:
        super().__init__()
        self.inner = inner
        self.absmax = 0.0
        self.low, self.high = 0.0, 0.0
        self.quantiles: list[float] = []

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            signed = x.detach().flatten().float()
            signed = signed[signed.abs() < SENTINEL]  # attention-mask sentinels are not activations
            values = signed.abs()
            if values.numel():
                self.low = min(self.low, float(signed.min()))
                self.high = max(self.high, float(signed.max()))
                if values.numel() > _MAX_QUANTILE_VALUES:
                    step = -(-values.numel() // _MAX_QUANTILE_VALUES)
                    sample = values[::step]
                else:
                    sample = values
                self.absmax = max(self.absmax, float(values.max()))
                self.quantiles.append(float(torch.quantile(sample, 0.999)))
        return self.inner(x)

    def quantize_fresh_output(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def quantize_relu_input(self, x: torch.Tensor) -> None:
        return None  # take the ordinary path: ReLU first, then this output quantizer


def _slots(sim: Any) -> dict[str, tuple[Quantizer, nn.ModuleList, int]]:
    """Enabled, unfrozen, calibrated per-tensor integer activation quantizers, in graph order."""
    found: dict[str, tuple[Quantizer, nn.ModuleList, int]] = {}
    for name, module in sim.quantized_modules().items():
        for role, slots in (("input", module.input_quantizers), ("output", module.output_quantizers)):
            for i, q in enumerate(slots):
                if (
                    isinstance(q, Quantizer)
                    and q.enabled
                    and not q.frozen
                    and q.is_calibrated
                    and q.spec.dtype == "int"
                    and q.spec.granularity == "per_tensor"
                ):
                    found[f"{name}.{role}.{i}"] = (q, slots, i)
    return found


def _run(sim: Any, batches: list[tuple[Any, ...]]) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    with torch.no_grad():
        for batch in batches:
            out = sim.model(*batch)
            outs.extend(_tensors(out))
    return outs


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.detach().float()]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, tuple | list):
        return [t for v in out for t in _tensors(v)]
    return []


def _error(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """Output error relative to the FP32 outputs' energy (scale-free, so outputs of any size weigh alike)."""
    total = 0.0
    for o, r in zip(outs, refs, strict=True):
        finite = torch.isfinite(r) & torch.isfinite(o)
        diff = (o - r)[finite]
        total += float((diff * diff).sum()) / max(float((r[finite] ** 2).sum()), 1e-12)
    return total


def _clipped(q: Quantizer, low: float, high: float, clip: float, low_sentinels: bool) -> Encoding:
    lo = torch.tensor([max(low, -clip)])
    hi = torch.tensor([min(high, clip)])
    if low_sentinels and not q.spec.symmetric:
        lo = torch.minimum(lo, hi - SENTINEL_HEADROOM)  # keep masked scores at ~zero softmax weight
    return Encoding.from_min_max(lo, hi, bitwidth=q.spec.bitwidth, symmetric=q.spec.symmetric, spec=q.spec)


def clip_activation_outliers(
    sim: Any,
    data: Any,
    config: OutlierClipConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> OutlierClipResult:
    """Clip outlier-dominated activation ranges of a calibrated ``sim`` where that lowers the model's
    output error against FP32 (see the module docstring). Clipped quantizers are frozen."""
    config = config or OutlierClipConfig()
    t0 = time.perf_counter()
    slots = _slots(sim)
    if not slots:
        raise ConfigError(
            "outlier clipping needs calibrated activation quantizers (run sim.compute_encodings first)"
        )
    batches = materialize_batches(data, config.num_samples, config.batch_size)
    was_training = sim.model.training
    sim.model.eval()
    try:
        with torch.no_grad():
            refs = [t for b in batches for t in _tensors(sim.fp_model(*b))]
        recorders = {key: _Recorder(q) for key, (q, _, _) in slots.items()}
        for key, (_, holder, i) in slots.items():
            holder[i] = recorders[key]
        try:
            before = _error(_run(sim, batches), refs)
        finally:
            for _, (q, holder, i) in slots.items():
                holder[i] = q
        result = OutlierClipResult(error_before=before, error_after=before)
        candidates = [
            key
            for key, rec in recorders.items()
            if rec.quantiles and rec.absmax > config.ratio * max(max(rec.quantiles), 1e-12)
        ]
        best_err = before
        for n, key in enumerate(candidates):
            q = slots[key][0]
            base = q.encoding
            assert base is not None  # _slots keeps calibrated quantizers only
            rec = recorders[key]
            best: Encoding | None = None
            # Candidates span the observed range (f = 1: min-max) whatever the scheme chose, so a scheme
            # that clipped too much (percentile cuts the massive token) is widened again when that pays.
            for f in (1.0, *config.fractions):
                q.set_encoding(_clipped(q, rec.low, rec.high, f * rec.absmax, q.range_setter.low_sentinels))
                err = _error(_run(sim, batches), refs)
                if err < best_err:
                    best_err, best = err, q.encoding
            q.set_encoding(best if best is not None else base)
            result.searched.append(key)
            if best is not None:
                q.freeze()
                result.clipped[key] = (rec.absmax, float(torch.maximum(-best.min, best.max).max()))
            if progress is not None:
                progress((n + 1) / len(candidates))
        result.error_after = best_err
    finally:
        sim.model.train(was_training)
    result.seconds = time.perf_counter() - t0
    return result
