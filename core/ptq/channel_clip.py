"""A clipping activation with one bound per channel: what ReLU6 becomes when equalization scales across it.

Cross-layer equalization divides output channel c of a layer by ``s_c``. A clipping activation after it
commutes with that scale only if its bounds move too: ``clip(x, lo, hi) / s = clip(x / s, lo / s, hi / s)``
for s > 0. So ReLU6 (``clip(x, 0, 6)``) becomes ``ChannelClip`` with upper bounds ``6 / s_c`` and the
equalized model computes exactly what the original did — no ReLU6 → ReLU replacement (DFQ, AIMET < 2.4)
and no refusal (AIMET ≥ 2.4). High-bias absorption lowers the bounds by the bias it moves.

Exported, it is ``Min(Max(x, lo), hi)`` with per-channel constants (ONNX Clip takes scalar bounds only);
quantsim config rules for ``Clip`` apply to it.

>>> clip = ChannelClip.from_bounds(0.0, 6.0, channels=3)
>>> clip.scale_(torch.tensor([1.0, 0.5, 2.0]))
>>> clip(torch.full((1, 3, 1, 1), 4.0)).flatten().tolist()
[4.0, 3.0, 4.0]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.graph.op_types import register_op_type


@register_op_type("Clip")
class ChannelClip(nn.Module):
    """``clamp(x, lower[c], upper[c])`` along ``dim`` (1: NC... layouts; -1 for Linear activations)."""

    lower: Tensor
    upper: Tensor

    def __init__(self, lower: Tensor, upper: Tensor, dim: int = 1) -> None:
        super().__init__()
        self.register_buffer("lower", lower.detach().clone().float())
        self.register_buffer("upper", upper.detach().clone().float())
        self.dim = dim

    @classmethod
    def from_bounds(cls, lower: float, upper: float, channels: int, dim: int = 1) -> ChannelClip:
        return cls(torch.full((channels,), float(lower)), torch.full((channels,), float(upper)), dim)

    def _shaped(self, bound: Tensor, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return bound.to(x.dtype).reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(x, self._shaped(self.lower, x)), self._shaped(self.upper, x))

    def scale_(self, factor: Tensor) -> None:
        """Follow a per-channel scale of the input: ``x → factor·x`` (factor > 0)."""
        self.lower.mul_(factor.to(self.lower))
        self.upper.mul_(factor.to(self.upper))

    def extra_repr(self) -> str:
        return f"channels={self.upper.numel()}, dim={self.dim}"


def clip_bounds(module: nn.Module | None) -> tuple[float, float] | None:
    """(lower, upper) of a scalar clipping activation (ReLU6, Hardtanh), or None."""
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    return None
