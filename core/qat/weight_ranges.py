"""Regular QAT: weight encodings that follow the weights after every optimizer step, cheaply.

The weight's range-setting scheme (SQNR/MSE search, percentile, ...) runs in full once, when QAT
starts; it chooses per group a clipped range [lo', hi'] inside the weight's observed [min, max].
What is kept is the *clip ratio* of each end, lo'/min and hi'/max. After each optimizer step the
encoding is rebuilt from the weight's new min/max (one ``aminmax`` per weight) times those ratios:

    encoding = Encoding.from_min_max(min(w)·lo'/min₀, max(w)·hi'/max₀)

For the min-max scheme the ratios are 1 and the result is bit-exact with a full recomputation. For
searching schemes it keeps the clipping the search chose for the calibrated weights while the range
moves with the weights; the search itself costs tens of passes (histograms, candidate grids) per
weight and, run after every step, took longer than the forward and backward of a small network.
``WeightRangeFollower.search()`` re-runs the full scheme (e.g. between epochs), and
``prepare_qat(sim, weight_search="every_step")`` restores the exact per-step search.

>>> follower = WeightRangeFollower(sim)   # runs the scheme once  # doctest: +SKIP
>>> opt.step(); follower.follow()          # prepare_qat's hook does this after every step  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.quant.encoding import Encoding
from core.quant.grouping import as_groups
from core.quant.quantizer import Quantizer

WEIGHT_SEARCH = ("once", "every_step")


@dataclass
class _Followed:
    module: nn.Module
    param: str
    quantizer: Quantizer
    ratio_lo: torch.Tensor
    ratio_hi: torch.Tensor


class WeightRangeFollower:
    """Weight encodings of one sim: the scheme's full search once, then min/max × the clip ratios it chose."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.followed: list[_Followed] = []
        self._batches: list[_PerTensorBatch] = []
        self.search()

    def search(self) -> None:
        """Run each weight quantizer's scheme on the current weights and record its clip ratios."""
        self.sim.compute_param_encodings()
        self.followed = []
        for module, pname, q, _ in _weight_quantizers(self.sim):
            setter = q.range_setter
            if setter.min is None or setter.max is None:
                continue
            # compute_encodings left the observed min/max in the setter; asking it for its range
            # again is the same (deterministic) search, done once here.
            lo, hi = setter.search_range(setter.min, setter.max)
            self.followed.append(_Followed(module, pname, q, _ratio(lo, setter.min), _ratio(hi, setter.max)))
        # Per-tensor weights of one spec are updated together: one from_min_max for all of them.
        by_spec: dict[Any, list[_Followed]] = {}
        for f in self.followed:
            if f.quantizer.spec.granularity == "per_tensor":
                by_spec.setdefault(f.quantizer.spec, []).append(f)
        self._batches = [_PerTensorBatch(spec, entries) for spec, entries in by_spec.items()]

    @torch.no_grad()
    def follow(self) -> None:
        """New encodings from the weights' current min/max (one pass over each weight)."""
        done: set[int] = set()
        for batch in self._batches:
            done.update(batch.follow())
        touched: set[int] = set()
        for f in self.followed:
            if id(f) not in done:
                _follow_one(f)
            if id(f.module) not in touched:
                touched.add(id(f.module))
                f.module.clear_param_cache()  # type: ignore[operator]


class _PerTensorBatch:
    """Per-tensor weight quantizers sharing one spec: their scales and zero points written in place."""

    def __init__(self, spec: Any, entries: list[_Followed]) -> None:
        self.spec = spec
        self.entries = entries
        self.ratio_lo = torch.cat([f.ratio_lo for f in entries])
        self.ratio_hi = torch.cat([f.ratio_hi for f in entries])

    def follow(self) -> list[int]:
        """Update every entry still in the state search() saw; return the ids of those updated."""
        live = []
        for i, f in enumerate(self.entries):
            q, weight = f.quantizer, f.module._parameters[f.param]
            if (
                weight is not None
                and q.enabled
                and not q.frozen
                and q.spec == self.spec
                and q.scale.shape == (1,)
                and q.zero_point.shape == (1,)
                and not q.scale.requires_grad
            ):
                live.append((i, q, weight))
        if not live:
            return []
        lows, highs = [], []
        for _, _, weight in live:
            lo, hi = torch.aminmax(weight.detach().float())
            lows.append(lo)
            highs.append(hi)
        index = torch.tensor([i for i, _, _ in live])
        spec = self.spec
        enc = Encoding.from_min_max(
            torch.stack(lows) * self.ratio_lo[index],
            torch.stack(highs) * self.ratio_hi[index],
            bitwidth=spec.bitwidth,
            symmetric=spec.symmetric,
            spec=spec,
        )
        # In place: the version counters move, so the quantizers' and modules' caches see the change.
        torch._foreach_copy_([q.scale for _, q, _ in live], list(enc.scale.split(1)))
        torch._foreach_copy_([q.zero_point for _, q, _ in live], list(enc.zero_point.split(1)))
        return [id(self.entries[i]) for i, _, _ in live]


def _follow_one(f: _Followed) -> None:
    weight = f.module._parameters[f.param]
    q = f.quantizer
    if weight is None or not q.enabled or q.frozen:
        return
    spec = q.spec
    lo, hi = torch.aminmax(as_groups(weight.detach().float(), spec), dim=1)
    q.set_encoding(
        Encoding.from_min_max(
            lo * f.ratio_lo, hi * f.ratio_hi, bitwidth=spec.bitwidth, symmetric=spec.symmetric, spec=spec
        )
    )


def _weight_quantizers(sim: Any) -> list[tuple[nn.Module, str, Quantizer, torch.Tensor]]:
    found = []
    for module in sim.quantized_modules().values():
        for pname, q in module.param_quantizers.items():
            weight = module._parameters[pname]
            if (
                isinstance(q, Quantizer)
                and weight is not None
                and q.enabled
                and not q.frozen
                and q.spec.dtype == "int"
            ):
                found.append((module, pname, q, weight))
    return found


def _ratio(chosen: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """chosen/observed per group; 1 where the observed end is 0 (nothing to scale)."""
    chosen, observed = chosen.float().reshape(-1), observed.float().reshape(-1)
    safe = torch.where(observed != 0, observed, torch.ones_like(observed))
    return torch.where(observed != 0, chosen / safe, torch.ones_like(observed))
