"""SQNR-optimal range ("tf-enhanced"): minimise quantization noise, clipping weighted by gamma."""

from __future__ import annotations

import math

import torch

from core.quant.encoding import QuantSpec
from core.quant.range_setters.base import RangeSetter, register_scheme
from core.quant.range_setters.histogram import RunningHistogram
from core.quant.range_setters.search import (
    MAX_SAMPLES_PER_GROUP,
    channel_balanced_search,
    exact_search,
    histogram_search,
)


class HistogramSearchRangeSetter(RangeSetter):
    """Per-tensor activations: running histogram; static tensors (weights): exact search.

    ``channel_axis`` (given for Conv/Gemm/ConvTranspose weights by QuantSim): a per-tensor weight's
    range balances the noise across those channels (``channel_balanced_search``) instead of over the
    whole tensor. Per-channel activations (rare) fall back to min-max per channel.
    """

    gamma = 1.0

    def __init__(self, spec: QuantSpec, gamma: float | None = None, channel_axis: int | None = None) -> None:
        super().__init__(spec)
        if gamma is not None:
            self.gamma = float(gamma)
        self.channel_axis = channel_axis
        self.static_shape: tuple[int, ...] = ()

    def observe(self, x: torch.Tensor) -> None:
        self.static_shape = tuple(x.shape) if self.count == 0 else ()
        super().observe(x)

    def reset(self) -> None:
        super().reset()
        self.hist = RunningHistogram()

    def accumulate(self, groups: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if self.spec.granularity == "per_tensor":
            self.hist.add(groups.reshape(-1), float(lo[0]), float(hi[0]))

    def search_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        axis, shape = self.channel_axis, self.static_shape
        if (
            axis is not None
            and self.static is not None
            and self.spec.granularity == "per_tensor"
            and -len(shape) <= axis < len(shape)
            and self.static.numel() == math.prod(shape)
        ):
            return channel_balanced_search(self.static.reshape(shape), axis, lo, hi, self.spec)
        # Exact search on a static tensor unless it is one large per-tensor group: the search
        # subsamples each group, which would miss rare outliers the histogram still counts.
        if self.static is not None and (
            self.spec.granularity != "per_tensor" or self.static.numel() <= MAX_SAMPLES_PER_GROUP
        ):
            return exact_search(self.static, lo, hi, self.spec, self.gamma)
        if self.spec.granularity == "per_tensor" and self.hist.counts is not None:
            best = histogram_search(
                self.hist.centers(), self.hist.counts, float(lo[0]), float(hi[0]), self.spec, self.gamma
            )
            return torch.tensor([best[0]]), torch.tensor([best[1]])
        return lo, hi


@register_scheme("sqnr", "tf_enhanced", "tf-enhanced", "post_training_tf_enhanced", "tfe")
class SqnrRangeSetter(HistogramSearchRangeSetter):
    gamma = 3.0
