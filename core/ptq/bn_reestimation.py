"""BN re-estimation: recompute BatchNorm running statistics on the (quantized) model, undoably.

After QAT at low bitwidth, the BN statistics collected in FP32 no longer describe the quantized
network's activations. Re-estimation puts only the BN layers in training mode with a cumulative
average (``momentum=None``: the running mean/var become the **average of per-batch statistics**, as
AIMET), runs N batches without gradients, and puts everything back. ``handle.remove()`` restores the
previous statistics.

>>> handle = reestimate_bn_stats(sim.model, calib_batches, num_batches=100)   # doctest: +SKIP
>>> handle.remove()   # back to the old statistics                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.ptq.calibration_batches import materialize_batches, to_device
from core.ptq.graph_walk import BN_TYPES

_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class BnReestimationHandle:
    """Saved statistics of every re-estimated BN; ``remove()`` puts them back (once)."""

    saved: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    model: nn.Module | None = None
    removed: bool = False

    @property
    def layers(self) -> list[str]:
        return list(self.saved)

    def remove(self) -> None:
        if self.removed or self.model is None:
            return
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for name, stats in self.saved.items():
                for key, value in stats.items():
                    getattr(modules[name], key).copy_(value)
        self.removed = True


def reestimate_bn_stats(
    model: nn.Module,
    data: Any,
    num_batches: int = 100,
    batch_size: int = 32,
    forward_fn: Callable[[nn.Module, tuple[Any, ...]], Any] | None = None,
) -> BnReestimationHandle:
    """Recompute the running statistics of every BatchNorm in ``model`` over ``num_batches`` batches.

    ``forward_fn(model, batch)`` runs one batch (default ``model(*batch)``). The model's train/eval
    flags and the BN momenta are restored afterwards; the new statistics stay until ``handle.remove()``.
    """
    bns = {n: m for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.track_running_stats}
    handle = BnReestimationHandle(model=model)
    if not bns:
        return handle
    batches = materialize_batches(data, num_batches * batch_size, batch_size)[:num_batches]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    modes = {n: m.training for n, m in model.named_modules()}
    momenta = {n: m.momentum for n, m in bns.items()}
    for name, bn in bns.items():
        handle.saved[name] = {k: getattr(bn, k).detach().clone() for k in _STATS}
    try:
        model.eval()
        for bn in bns.values():
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average = mean of per-batch statistics
            bn.train()
        with torch.no_grad():
            for batch in batches:
                b = to_device(batch, device)
                if forward_fn is not None:
                    forward_fn(model, b)
                else:
                    model(*b)
    finally:
        for name, module in model.named_modules():
            module.training = modes[name]
        for name, bn in bns.items():
            bn.momentum = momenta[name]
    return handle
