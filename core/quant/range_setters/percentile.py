"""Percentile range: clip (100 − p)% of the values on each side (p in [50, 100])."""

from __future__ import annotations

import torch

from core.errors import ConfigError
from core.quant.encoding import QuantSpec
from core.quant.range_setters.base import register_scheme
from core.quant.range_setters.sqnr import HistogramSearchRangeSetter


@register_scheme("percentile", "post_training_percentile")
class PercentileRangeSetter(HistogramSearchRangeSetter):
    def __init__(self, spec: QuantSpec, percentile: float = 99.99) -> None:
        if not 50.0 <= float(percentile) <= 100.0:
            raise ConfigError(f"percentile {percentile} out of range; choose a value in [50, 100]")
        self.percentile = float(percentile)
        super().__init__(spec)

    def search_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_hi = self.percentile / 100.0
        q_lo = 1.0 - q_hi
        if self.static is not None:
            n = self.static.shape[1]
            k_lo = max(1, min(n, round(q_lo * (n - 1)) + 1))
            k_hi = max(1, min(n, round(q_hi * (n - 1)) + 1))
            return self.static.kthvalue(k_lo, dim=1).values, self.static.kthvalue(k_hi, dim=1).values
        if self.spec.granularity == "per_tensor" and self.hist.counts is not None:
            cdf = torch.cumsum(self.hist.counts, 0) / self.hist.counts.sum()
            centers = self.hist.centers()
            i_lo = int(torch.searchsorted(cdf, torch.tensor(q_lo, dtype=cdf.dtype)).clamp(max=len(cdf) - 1))
            i_hi = int(torch.searchsorted(cdf, torch.tensor(q_hi, dtype=cdf.dtype)).clamp(max=len(cdf) - 1))
            new_lo = max(float(lo[0]), float(centers[i_lo]))
            new_hi = min(float(hi[0]), float(centers[i_hi]))
            return torch.tensor([new_lo]), torch.tensor([new_hi])
        return lo, hi
