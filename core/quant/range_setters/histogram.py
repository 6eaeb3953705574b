"""A running histogram of activation values whose range grows as calibration batches arrive."""

from __future__ import annotations

import torch

from core.quant import kernels


class RunningHistogram:
    """2048-bin histogram over [lo, hi]; a batch outside the range widens it and re-bins the counts.

    Widening overshoots by 25% so a slowly drifting range is not re-binned every batch.
    """

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.counts: torch.Tensor | None = None
        self.lo = 0.0
        self.hi = 0.0

    def add(self, flat: torch.Tensor, lo: float, hi: float) -> None:
        if self.counts is None:
            if hi <= lo:
                hi = lo + max(abs(lo), 1e-6) * 1e-3
            self.lo, self.hi = lo, hi
            self.counts = torch.zeros(self.bins, dtype=torch.float64)
        elif lo < self.lo or hi > self.hi:
            width = max(hi, self.hi) - min(lo, self.lo)
            new_lo = min(lo, self.lo) - (0.25 * width if lo < self.lo else 0.0)
            new_hi = max(hi, self.hi) + (0.25 * width if hi > self.hi else 0.0)
            self._rebin(new_lo, new_hi)
        counts = kernels.histogram(flat, self.lo, self.hi, self.bins)
        if counts is None:
            counts = torch.histc(flat, self.bins, self.lo, self.hi)
        self.counts += counts.to(torch.float64)

    def _rebin(self, new_lo: float, new_hi: float) -> None:
        assert self.counts is not None
        centers = self.centers()
        width = (new_hi - new_lo) / self.bins
        idx = ((centers - new_lo) / width).floor().clamp(0, self.bins - 1).long()
        counts = torch.zeros_like(self.counts)
        counts.index_add_(0, idx, self.counts)
        self.counts, self.lo, self.hi = counts, new_lo, new_hi

    def centers(self) -> torch.Tensor:
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)
