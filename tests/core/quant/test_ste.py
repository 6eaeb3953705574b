"""CPU training fake-quant (core/quant/ste.py): bit-exact with torch's fused kernels, with and without numba,
and the fused clipping activation equal to the activation followed by the quantizer."""

from __future__ import annotations

import pytest
import torch

from core.quant import ste
from core.quant.encoding import QuantSpec
from core.quant.learnable import (
    LearnableQuantizer,
    _LsqPerTensor,
    learnable_fake_quantize,
    lsq_fake_quantize_clipped,
    lsq_grad_factor,
    safe_scale,
)
from core.quant.quantizer import Quantizer

QMAX = 15


@pytest.fixture(params=["numba", "torch"])
def kernels(request, monkeypatch):
    """Both implementations: the numba passes (where installed) and torch's element-wise fallback."""
    if request.param == "numba" and not ste.AVAILABLE:
        pytest.skip("numba not installed")
    if request.param == "torch":
        monkeypatch.setattr(ste, "AVAILABLE", False)
    return request.param


def _grid(seed: int) -> tuple[float, float, int]:
    gen = torch.Generator().manual_seed(seed)
    s32 = (torch.rand((), generator=gen) * 0.3 + 1e-3).float()
    zp = int(torch.randint(0, QMAX + 1, (), generator=gen))
    return float(s32), float(1.0 / s32), zp


def _hard_inputs(scale: float, inv: float, zp: int, seed: int) -> torch.Tensor:
    """Random values plus every grid edge, every half-level tie and their float32 neighbours."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = -zp, QMAX - zp
    points = torch.tensor(
        [(lo - 0.5) * scale, (hi + 0.5) * scale, (lo - 0.5) / inv, (hi + 0.5) / inv, 0.0, 6.0]
        + [(k + 0.5) / inv for k in range(lo - 3, hi + 3)]
    ).float()
    near = [torch.nextafter(points, torch.full_like(points, d)) for d in (-1e9, 1e9)]
    return torch.cat([torch.randn(20000, generator=gen) * 10 * scale, points, *near])


@pytest.mark.parametrize("seed", range(6))
def test_ste_matches_torchs_fused_kernel_bit_for_bit(kernels, seed):
    scale, inv, zp = _grid(seed)
    x = _hard_inputs(scale, inv, zp, seed).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    y = ste.fake_quantize_ste(x, scale, inv, float(-zp), float(QMAX - zp))
    ref = torch.fake_quantize_per_tensor_affine(
        ref_x, torch.tensor([scale]), torch.tensor([zp], dtype=torch.int32), 0, QMAX
    )
    grad = torch.randn_like(y)
    y.backward(grad)
    ref.backward(grad)
    assert torch.equal(y, ref)
    assert torch.equal(x.grad, ref_x.grad)


@pytest.mark.parametrize("bounds", [(0.0, float("inf")), (0.0, 6.0), (-0.3, 0.45)])
def test_ste_with_a_fused_activation_equals_activation_then_quantizer(kernels, bounds):
    scale, inv, zp = _grid(7)
    x = torch.cat([_hard_inputs(scale, inv, zp, 7), torch.tensor(bounds).clamp(-1e30, 1e30)]).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    y = ste.fake_quantize_ste(x, scale, inv, float(-zp), float(QMAX - zp), activation=bounds)
    ref = torch.fake_quantize_per_tensor_affine(
        torch.nn.functional.hardtanh(ref_x, *bounds),
        torch.tensor([scale]),
        torch.tensor([zp], dtype=torch.int32),
        0,
        QMAX,
    )
    grad = torch.randn_like(y)
    y.backward(grad)
    ref.backward(grad)
    assert torch.equal(y, ref)  # -0.0 == 0.0 where the activation's zero meets the grid's
    assert torch.equal(x.grad, ref_x.grad)


@pytest.mark.parametrize("symmetric", [False, True])
def test_lsq_on_cpu_matches_the_fused_kernel_path(kernels, symmetric):
    """The CPU LSQ function against the fused-kernel autograd function it replaces on CPU: same output
    and input gradient bit for bit, scale/zero-point gradients up to float32 summation order."""
    scale, inv, zp = _grid(11)
    zp = 8 if symmetric else zp
    x = _hard_inputs(scale, inv, zp, 11)
    spec = QuantSpec(bitwidth=4, symmetric=symmetric)
    grad = torch.randn_like(x)
    results = []
    for path in ("cpu", "fused_kernel"):
        xi = x.clone().requires_grad_()
        s = torch.tensor([scale], requires_grad=True)
        z = torch.tensor([float(zp)], requires_grad=not symmetric)
        if path == "cpu":
            y = learnable_fake_quantize(xi, spec, s, z)
        else:
            y = _LsqPerTensor.apply(xi, safe_scale(s), z, QMAX, lsq_grad_factor(xi, spec, 1))
        y.backward(grad)
        results.append((y.detach(), xi.grad, s.grad, z.grad))
    (y, gx, gs, gz), (ry, rgx, rgs, rgz) = results
    assert torch.equal(y, ry) and torch.equal(gx, rgx)
    torch.testing.assert_close(gs, rgs, rtol=1e-3, atol=1e-6)
    if symmetric:
        assert gz is None and rgz is None
    else:
        torch.testing.assert_close(gz, rgz, rtol=1e-3, atol=1e-6)


def test_lsq_with_a_fused_relu6_equals_relu6_then_lsq(kernels):
    q = Quantizer(QuantSpec(bitwidth=4))
    q.compute_encoding_from(torch.linspace(0, 5, 100))
    learner = q.enable_range_learning()
    assert isinstance(learner, LearnableQuantizer)
    x = torch.randn(64, 8, 8, 8) * 4
    grad = torch.randn_like(x)
    fused_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = lsq_fake_quantize_clipped(fused_x, learner, (0.0, 6.0))
    if kernels == "torch":
        assert fused is None  # the fused LSQ backward needs numba; callers take the ordinary path
        return
    assert fused is not None
    fused.backward(grad)
    fused_grads = (fused_x.grad, learner.scale.grad.clone(), learner.zero_point.grad.clone())
    learner.zero_grad()
    ref = learner(torch.nn.functional.relu6(ref_x))
    ref.backward(grad)
    assert torch.equal(fused, ref) and torch.equal(fused_grads[0], ref_x.grad)
    torch.testing.assert_close(fused_grads[1], learner.scale.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(fused_grads[2], learner.zero_point.grad, rtol=1e-4, atol=1e-7)


def test_grid_bounds_are_the_exact_float32_edges_of_the_grid():
    for seed in range(20):
        _, inv, zp = _grid(seed)
        lo, hi = float(-zp), float(QMAX - zp)
        a, b = ste.grid_bounds(inv, lo, hi)
        a32, b32 = torch.tensor([a, b]).float().tolist()
        assert (a, b) == (a32, b32)
        edges = torch.tensor([a, b]).float()
        inside = torch.stack([torch.nextafter(edges[0], edges[1]), torch.nextafter(edges[1], edges[0])])
        levels = torch.round(torch.cat([edges, inside]) * torch.tensor(inv).float())
        assert levels[0] < lo and levels[1] > hi  # the open ends are off the grid
        assert lo <= levels[2] and levels[3] <= hi  # their next floats inwards are on it
