"""Range searches shared by the SQNR and MSE schemes.

Both minimise expected squared quantization error; SQNR ("tf-enhanced") additionally weighs
clipping error by ``gamma`` (3 by default, as AIMET does) because clipping outliers hurts
more than its squared error suggests.
"""

from __future__ import annotations

import torch

from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import fake_quantize

_MAX_SAMPLES_PER_GROUP = 4096


def histogram_search(
    centers: torch.Tensor,
    counts: torch.Tensor,
    lo: float,
    hi: float,
    spec: QuantSpec,
    gamma: float,
    steps: int = 24,
) -> tuple[float, float]:
    """Best [min, max] for a per-tensor histogram: candidates clip each end by a fraction.

    Cost of a candidate = Σ count · (scale²/12 inside the range, gamma·distance² outside).
    """
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    fr = torch.linspace(1.0 / steps, 1.0, steps, dtype=torch.float64)
    if spec.symmetric:
        absmax = max(-lo, hi)
        cand_lo = -absmax * fr
        cand_hi = absmax * fr
    else:
        los = lo * fr if lo < 0 else torch.zeros(1, dtype=torch.float64)
        his = hi * fr if hi > 0 else torch.zeros(1, dtype=torch.float64)
        cand_lo = los.repeat_interleave(len(his))
        cand_hi = his.repeat(len(los))
    span = (cand_hi - cand_lo).clamp_min(1e-12)
    scale = span / spec.num_steps
    c = centers.unsqueeze(0)
    clamped = torch.minimum(torch.maximum(c, cand_lo.unsqueeze(1)), cand_hi.unsqueeze(1))
    clip_err = (c - clamped) ** 2
    inside = clip_err == 0
    noise = torch.where(inside, (scale**2 / 12).unsqueeze(1), gamma * clip_err)
    cost = (noise * counts.unsqueeze(0)).sum(1)
    best = int(torch.argmin(cost))
    return float(cand_lo[best]), float(cand_hi[best])


def exact_search(
    groups: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec, gamma: float, steps: int = 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best [min, max] per group of a static tensor (a weight), measured by real quantize-dequantize.

    Each candidate shrinks both ends by the same fraction; large groups are subsampled
    (deterministically) to bound the cost.
    """
    if groups.shape[1] > _MAX_SAMPLES_PER_GROUP:
        gen = torch.Generator().manual_seed(0)
        cols = torch.randperm(groups.shape[1], generator=gen)[:_MAX_SAMPLES_PER_GROUP].to(groups.device)
        groups = groups[:, cols]
    per_channel = QuantSpec(
        bitwidth=spec.bitwidth, symmetric=spec.symmetric, granularity="per_channel", axis=0
    )
    best_cost = torch.full((groups.shape[0],), float("inf"), device=groups.device)
    best_lo, best_hi = lo.clone(), hi.clone()
    for f in torch.linspace(1.0 / steps, 1.0, steps).tolist():
        c_lo, c_hi = lo * f, hi * f
        enc = Encoding.from_min_max(
            c_lo, c_hi, bitwidth=spec.bitwidth, symmetric=spec.symmetric, spec=per_channel
        )
        q = fake_quantize(groups, enc)
        err = (q - groups) ** 2
        if gamma != 1.0:
            clipped = (groups < enc.min.unsqueeze(1)) | (groups > enc.max.unsqueeze(1))
            err = torch.where(clipped, err * gamma, err)
        cost = err.mean(1)
        better = cost < best_cost
        best_cost = torch.where(better, cost, best_cost)
        best_lo = torch.where(better, c_lo, best_lo)
        best_hi = torch.where(better, c_hi, best_hi)
    return best_lo, best_hi
