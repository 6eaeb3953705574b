"""FP32 activation statistics at every activation quantizer of a QuantSim.

One pass over the data with all quantizers disabled (the FP32 function) and a forward pre-hook on
each enabled activation quantizer records the tensor it would quantize: exact min/max and a bounded
uniform sample of values for histograms (memory stays O(quantizers × sample size)).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.analysis.sensitivity import enabled_only

SAMPLE_SIZE = 50_000


@dataclass
class TensorStats:
    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0
    samples: list[torch.Tensor] = field(default_factory=list)
    _kept: int = 0

    def observe(self, x: torch.Tensor, generator: torch.Generator, sample_size: int = SAMPLE_SIZE) -> None:
        flat = x.detach().float().reshape(-1)
        if flat.numel() == 0:
            return
        finite = flat[torch.isfinite(flat)]
        if finite.numel():
            self.min = min(self.min, float(finite.min()))
            self.max = max(self.max, float(finite.max()))
        self.count += flat.numel()
        room = sample_size - self._kept
        if room > 0 and finite.numel():
            take = min(room, finite.numel(), max(1, sample_size // 8))
            idx = torch.randint(finite.numel(), (take,), generator=generator)
            self.samples.append(finite[idx].cpu())
            self._kept += take

    def values(self) -> torch.Tensor:
        return torch.cat(self.samples) if self.samples else torch.empty(0)


def collect_activation_stats(
    sim: Any, batches: Iterable[tuple[torch.Tensor, ...]], seed: int = 0
) -> dict[str, TensorStats]:
    """quantizer key → FP32 statistics of the tensor it quantizes, over ``batches``."""
    gen = torch.Generator().manual_seed(seed)
    stats: dict[str, TensorStats] = {}
    handles = []
    for key, q in sim.activation_quantizers().items():
        if not q.enabled:
            continue
        stats[key] = TensorStats()

        def hook(_module: Any, args: tuple[Any, ...], key: str = key) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                stats[key].observe(args[0], gen)

        handles.append(q.register_forward_pre_hook(hook))
    try:
        with enabled_only(sim, []), torch.no_grad():
            sim.model.eval()
            for batch in batches:
                sim.model(*batch)
    finally:
        for h in handles:
            h.remove()
    return stats
