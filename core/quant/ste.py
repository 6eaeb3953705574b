"""Training-time per-tensor fake quantization on CPU: the STE and LSQ passes, fused where numba is present.

PyTorch's fused ``fake_quantize_per_tensor_affine`` is a scalar loop on CPU (about 13 ns per element,
measured on one thread: 10 ms for a 64x48x16x16 activation, 20-50x a vectorised pass), and with
autograd it also writes a bool mask. In a QAT step of a small convolutional network that kernel costs
more than the convolutions. The forward here is the fused kernel's float32 arithmetic, bit for bit:

    c = clamp(nearbyint(x · (1/s)), lo, hi),   x̂ = c · s        (lo = −zp, hi = Q − zp)

and the masked straight-through gradient is ∂x̂/∂x = 1 where lo ≤ nearbyint(x·(1/s)) ≤ hi, else 0.
That condition is monotone in x, so it is an open interval (a, b) of x whose float32 ends
``grid_bounds`` finds exactly; ``hardtanh_backward(grad, x, a, b)`` applies it in one vectorised pass.

With numba (an optional dependency, as in core/quant/kernels.py) the forward is one pass over x
(read x, write x̂) and the LSQ backward one pass computing ∂x and the three sums it needs; the whole
training step stays memory-bound, so passes are what cost. Without numba the same values come from
torch's element-wise ops (four passes forward, five backward).

>>> x = torch.tensor([0.26, 5.0], requires_grad=True)
>>> y = fake_quantize_ste(x, 0.1, float(1 / torch.tensor(0.1)), -8.0, 7.0)
>>> [round(v, 2) for v in y.tolist()]
[0.3, 0.7]
>>> y.sum().backward(); x.grad.tolist()
[1.0, 0.0]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from core.quant import kernels

# Below this many elements torch's fused STE kernel (one C++ autograd node) beats the Python-level
# function's overhead (one thread, forward+backward: 768 elements 88 µs vs 151 µs, 4096: 93 vs 159,
# 65536: 483 vs 169). The LSQ function has no such threshold: torch's LSQ path is several
# Python-level ops too, and slower at every size measured (144 elements: 222 vs 155 µs).
MIN_ELEMENTS = 8192
# (amin, amax) of "no clipping activation before the quantizer".
NO_ACTIVATION = (-float("inf"), float("inf"))

# numba is optional; core/quant/kernels.py decides once whether it is used (LOWBIT_DISABLE_NUMBA included).
AVAILABLE = kernels.AVAILABLE
if AVAILABLE:
    import numba

    @numba.njit(cache=True, nogil=True)
    def _fq_forward(x: Any, y: Any, inv: Any, scale: Any, lo: Any, hi: Any) -> None:  # pragma: no cover
        for i in range(x.size):
            y[i] = min(max(np.rint(x[i] * inv), lo), hi) * scale

    # Reassociation only, so the sums vectorise; every element-wise result stays exact. The sums are
    # float32, as torch.dot's (float64 accumulators halve the kernel's speed). The input
    # u = clamp(x, amin, amax) is a fused clipping activation's output (±inf: none, u = x).
    @numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
    def _lsq_backward(
        grad: Any, x: Any, gx: Any, inv: Any, lo: Any, hi: Any, amin: Any, amax: Any
    ) -> Any:  # pragma: no cover
        zero = np.float32(0.0)
        dot_d = zero  # Σ grad·∂x̂/∂s (over s): c − u/s on the grid, c off it
        out = zero  # Σ grad off the grid
        for i in range(x.size):
            g = grad[i]
            xi = x[i]
            u = min(max(xi, amin), amax)
            v = u * inv
            r = np.rint(v)
            c = min(max(r, lo), hi)
            inside = r >= lo and r <= hi
            dot_d += g * (c - v if inside else c)
            gi = g if inside else zero
            out += g - gi
            gx[i] = gi if xi > amin and xi < amax else zero
        return dot_d, out


def cpu_float32(x: torch.Tensor) -> bool:
    """Whether these functions apply to x at all: float32 on CPU (CUDA's fused kernels are fast)."""
    return x.dtype == torch.float32 and x.device.type == "cpu"


def use_ste_kernel(x: torch.Tensor) -> bool:
    """Whether ``fake_quantize_ste`` pays off for x: float32 on CPU, not tiny."""
    return cpu_float32(x) and x.numel() >= MIN_ELEMENTS


def fake_quantize_ste(
    x: torch.Tensor,
    scale: float,
    inv_scale: float,
    lo: float,
    hi: float,
    activation: tuple[float, float] = NO_ACTIVATION,
) -> torch.Tensor:
    """Per-tensor quantize-dequantize of a float32 CPU tensor with the masked straight-through gradient.

    ``inv_scale`` must be the float32 reciprocal of ``scale`` (as ``Quantizer._inference_params`` gives)
    for the result to equal torch's fused kernel bit for bit. ``activation = (amin, amax)`` fuses a
    clipping activation before the quantizer (ReLU: (0, inf), ReLU6: (0, 6)): the result and gradient
    are those of quantizing ``hardtanh(x, amin, amax)``, whose own pass and backward are saved.
    """
    amin, amax = activation
    (lo_u, hi_u), (a, b) = fused_grid(inv_scale, lo, hi, amin, amax)
    return _SteFakeQuant.apply(x, scale, inv_scale, lo_u, hi_u, a, b)


def fake_quantize_forward(
    x: torch.Tensor, scale: float, inv_scale: float, lo: float, hi: float
) -> torch.Tensor:
    """clamp(nearbyint(x · inv_scale), lo, hi) · scale as a new tensor, without autograd."""
    if AVAILABLE and x.is_contiguous():
        y = torch.empty_like(x)
        f32 = np.float32
        _fq_forward(
            x.detach().numpy().reshape(-1),
            y.numpy().reshape(-1),
            f32(inv_scale),
            f32(scale),
            f32(lo),
            f32(hi),
        )
        return y
    return torch.mul(x.detach(), inv_scale).round_().clamp_(lo, hi).mul_(scale)


def lsq_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    inv_scale: float,
    lo: float,
    hi: float,
    activation: tuple[float, float] = NO_ACTIVATION,
) -> tuple[torch.Tensor, float, float]:
    """(∂x, Σ grad·(c − mask·u/s), Σ grad·(1 − mask)) for the per-tensor LSQ backward, where
    u = hardtanh(x, *activation) is the quantizer's input, c its clamped grid level, mask its in-grid
    mask and ∂x = grad·mask·[amin < x < amax]. A fused activation needs numba (``fuses_activations``).

    The scale's term is summed per element, not as ⟨grad, c⟩ − ⟨grad·mask, u⟩/s: those two sums are
    large and nearly cancel (c ≈ u/s on the grid), which loses most float32 digits of the difference."""
    if AVAILABLE and x.is_contiguous():
        grad = grad.contiguous()
        grad_x = torch.empty_like(x)
        f32 = np.float32
        dot_d, out = _lsq_backward(
            grad.numpy().reshape(-1),
            x.detach().numpy().reshape(-1),
            grad_x.numpy().reshape(-1),
            f32(inv_scale),
            f32(lo),
            f32(hi),
            f32(activation[0]),
            f32(activation[1]),
        )
        return grad_x, float(dot_d), float(out)
    if activation != NO_ACTIVATION:
        raise ValueError("a fused activation in the LSQ backward needs numba")
    a, b = grid_bounds(inv_scale, lo, hi)
    grad_x = torch.ops.aten.hardtanh_backward(grad, x, a, b)
    v = torch.mul(x.detach(), inv_scale)
    d = v.round().clamp_(lo, hi).sub_(torch.ops.aten.hardtanh_backward(v, x, a, b))
    return grad_x, float(torch.dot(grad.reshape(-1), d.reshape(-1))), float(grad.sum() - grad_x.sum())


def fuses_activations(lsq: bool) -> bool:
    """Whether a clipping activation can be fused before the quantizer (LSQ's fused backward needs numba)."""
    return AVAILABLE or not lsq


def fused_levels(inv_scale: float, lo: float, hi: float, amin: float, amax: float) -> tuple[float, float]:
    """Grid ends (lo', hi') with ``quantize(hardtanh(x, amin, amax))`` = clamp(f(x), lo', hi')·s.

    With f(v) = nearbyint(v·inv), monotone, f(clamp(x, amin, amax)) = clamp(f(x), f(amin), f(amax)),
    so lo' = clamp(f(amin), lo, hi) and hi' = clamp(f(amax), lo, hi).
    """
    if (amin, amax) == NO_ACTIVATION:
        return lo, hi
    inv = np.float32(inv_scale)

    def level(v: float) -> float:
        return min(max(float(np.rint(np.float32(np.float32(v) * inv))), lo), hi)

    return level(amin), level(amax)


@lru_cache(maxsize=4096)
def fused_grid(
    inv_scale: float, lo: float, hi: float, amin: float, amax: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(``fused_levels``, open mask bounds) of ``quantize(hardtanh(x, amin, amax))``.

    The gradient passes where both the activation (amin < x < amax, strict as in torch's backward)
    and the grid (``grid_bounds``) do: the interval (max(amin, a), min(amax, b)).
    """
    a, b = grid_bounds(inv_scale, lo, hi)
    return fused_levels(inv_scale, lo, hi, amin, amax), (max(amin, a), min(amax, b))


@lru_cache(maxsize=4096)
def grid_bounds(inv_scale: float, lo: float, hi: float) -> tuple[float, float]:
    """(a, b) with  a < x < b  ⟺  lo ≤ nearbyint(fl32(x · inv_scale)) ≤ hi  for every float32 x (not NaN).

    Starts from (lo − ½)/inv and (hi + ½)/inv and walks float32 neighbours (a few steps at most)
    to where the rounded product crosses the grid's end, so the mask equals the fused kernel's.
    """
    inv = np.float32(inv_scale)

    def level(x: np.float32) -> float:
        return float(np.rint(np.float32(x * inv)))

    down, up = np.float32(-np.inf), np.float32(np.inf)
    # Smallest x on the grid: level(x) >= lo.
    first = np.float32((lo - 0.5) / float(inv))
    while level(first) >= lo:
        first = np.nextafter(first, down)
    while level(first) < lo:
        first = np.nextafter(first, up)
    # Largest x on the grid: level(x) <= hi.
    last = np.float32((hi + 0.5) / float(inv))
    while level(last) <= hi:
        last = np.nextafter(last, up)
    while level(last) > hi:
        last = np.nextafter(last, down)
    return float(np.nextafter(first, down)), float(np.nextafter(last, up))


class _SteFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scale: float, inv_scale: float, lo: float, hi: float, a: float, b: float
    ) -> torch.Tensor:
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x)
            ctx.bounds = (a, b)
        return fake_quantize_forward(x, scale, inv_scale, lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        a, b = ctx.bounds
        return torch.ops.aten.hardtanh_backward(grad, x, a, b), None, None, None, None, None, None
