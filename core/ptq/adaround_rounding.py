"""Learned rounding of one weight tensor (AdaRound, Nagel et al. 2020): the optimisation loop.

Each weight w with scale s (grid ``[lo, hi]`` in units of s, lo = offset) is rounded to
``ŵ = clamp(floor(w/s) + h(α), lo, hi)·s`` with the rectified sigmoid
``h(α) = clamp(σ(α)·(ζ − γ) + γ, 0, 1)``, ζ = 1.1, γ = −0.1, α initialised so that h equals the
fractional part of w/s (the soft weight starts at the FP32 weight). The loss is the layer's
reconstruction error plus, after the warm start, ``reg · Σ (1 − |2h − 1|^β)`` with β annealed by a
cosine from β_start to β_end, which pushes every h to 0 or 1. The final rounding is ``h = [α ≥ 0]``.

Speed: gradients are chained by hand (no autograd graph per step) and Adam is applied in place, so an
iteration is a couple of dozen tensor ops plus the objective's own cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

ZETA, GAMMA = 1.1, -0.1
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
# Below this many flops per step, intra-op threads cost more than they save (and on a shared machine
# a descheduled worker thread stalls every op: 2 threads measured 26× slower than 1 under load).
SINGLE_THREAD_FLOPS = 50_000_000


@contextmanager
def cpu_threads_for(flops_per_step: int, device: torch.device) -> Iterator[None]:
    """Run small CPU optimisations single-threaded; leave large ones and GPUs alone."""
    if device.type != "cpu" or flops_per_step >= SINGLE_THREAD_FLOPS or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SoftRounding:
    """The rounding variables α of one weight and the fixed tensors derived from its encoding."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        w = weight.detach().float()
        ratio = w / scale
        floor = torch.floor(ratio)
        inside = (floor >= lo) & (floor + 1 <= hi)  # elements whose clamp never binds for h ∈ [0, 1]
        self.scale_masked = (scale * inside).expand_as(w).contiguous()
        self.base = (torch.maximum(torch.minimum(floor, hi), lo) * scale).expand_as(w).contiguous()
        frac = (ratio - floor).clamp(0.0, 1.0)
        p = ((frac - GAMMA) / (ZETA - GAMMA)).clamp(1e-6, 1 - 1e-6)
        self.alpha = torch.log(p / (1 - p))
        self.nearest = (
            (torch.maximum(torch.minimum(torch.round(ratio), hi), lo) * scale).expand_as(w).contiguous()
        )

    def soft_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ŵ, h, unclamped h, σ(α)) for the current α."""
        sig = torch.sigmoid(self.alpha)
        h_lin = sig * (ZETA - GAMMA) + GAMMA
        h = h_lin.clamp(0.0, 1.0)
        return torch.addcmul(self.base, h, self.scale_masked), h, h_lin, sig

    def hard_weight(self) -> torch.Tensor:
        return torch.addcmul(self.base, (self.alpha >= 0).to(self.base.dtype), self.scale_masked)


def beta_at(step: int, iterations: int, warm_start: float, beta_range: tuple[float, float]) -> float | None:
    """β of the regulariser at ``step``; None during the warm start (regulariser off)."""
    warm = int(warm_start * iterations)
    if step < warm:
        return None
    start, end = beta_range
    progress = (step - warm) / max(iterations - warm, 1)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def optimize_rounding(
    rounding: SoftRounding,
    weight_gradient: Callable[[torch.Tensor], torch.Tensor],
    *,
    iterations: int,
    reg_param: float,
    beta_range: tuple[float, float],
    warm_start: float,
    lr: float,
    check: Callable[[int], None] | None = None,
    check_every: int = 250,
) -> None:
    """Run Adam on α for ``iterations`` steps; ``weight_gradient(ŵ)`` returns d reconstruction / d ŵ.

    ``check(step)`` is called every ``check_every`` steps (progress reporting, cancellation)."""
    alpha = rounding.alpha
    m = torch.zeros_like(alpha)
    v = torch.zeros_like(alpha)
    b1, b2 = _ADAM_BETAS
    slope = ZETA - GAMMA
    for step in range(iterations):
        if check is not None and step % check_every == 0:
            check(step)
        w_soft, h, h_lin, sig = rounding.soft_weight()
        grad_h = weight_gradient(w_soft).mul_(rounding.scale_masked)
        beta = beta_at(step, iterations, warm_start, beta_range)
        if beta is not None and reg_param > 0:
            # d/dh (1 − |2h − 1|^β) = −2β·(2h − 1)·|2h − 1|^(β − 2)
            t = h * 2.0 - 1.0
            grad_h.addcmul_(t, t.abs().pow(beta - 2.0), value=-2.0 * beta * reg_param)
        # dh/dα = (ζ − γ)·σ(1 − σ) where h is not clamped
        grad = grad_h.mul_(sig * (1.0 - sig)).mul_((h == h_lin).to(alpha.dtype)).mul_(slope)
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        t1 = step + 1
        denom = (v / (1 - b2**t1)).sqrt_().add_(_ADAM_EPS)
        alpha.addcdiv_(m, denom, value=-lr / (1 - b1**t1))
