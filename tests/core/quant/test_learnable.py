"""Range learning: LSQ gradients of scale/zero point, gradient scaling, collapsed ranges, state round trips."""

from __future__ import annotations

import pytest
import torch

from core.errors import LowbitError
from core.quant import Encoding, Quantizer, QuantSpec
from core.quant.learnable import (
    LearnableQuantizer,
    _reference,
    learnable_fake_quantize,
    lsq_grad_factor,
)
from core.quant.primitives import fake_quantize_raw


def _calibrated(lo: float, hi: float, spec: QuantSpec) -> Quantizer:
    q = Quantizer(spec)
    q.set_encoding(
        Encoding.from_min_max(
            torch.tensor([lo]),
            torch.tensor([hi]),
            bitwidth=spec.bitwidth,
            symmetric=spec.symmetric,
            spec=spec,
        )
    )
    return q


def _mse_grads(q: Quantizer, x: torch.Tensor) -> None:
    q.enable_range_learning()
    loss = (q(x) - x).pow(2).mean()
    loss.backward()


def test_forward_matches_fixed_grid_fake_quant():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, requires_grad=True)
    for spec, groups in (
        (QuantSpec(bitwidth=4), 1),
        (QuantSpec(bitwidth=8, symmetric=True, granularity="per_channel", axis=1), 8),
    ):
        enc = Encoding.from_min_max(
            -torch.rand(groups) - 0.5,
            torch.rand(groups) + 0.5,
            bitwidth=spec.bitwidth,
            symmetric=spec.symmetric,
            spec=spec,
        )
        fixed = fake_quantize_raw(x, spec, enc.scale, enc.zero_point)
        learned = learnable_fake_quantize(x, spec, enc.scale.clone().requires_grad_(), enc.zero_point.float())
        assert torch.equal(fixed, learned)


def test_scale_grows_when_range_clips_and_shrinks_when_too_coarse():
    """Given uniform data in [-1, 1], when the 4-bit range is [-0.25, 0.25] the MSE gradient asks for a
    larger scale (negative grad); when it is [-8, 8] it asks for a smaller one (positive grad)."""
    x = torch.linspace(-1, 1, 4001)
    spec = QuantSpec(bitwidth=4, symmetric=True)
    narrow, wide = _calibrated(-0.25, 0.25, spec), _calibrated(-8, 8, spec)
    _mse_grads(narrow, x)
    _mse_grads(wide, x)
    assert float(narrow.scale.grad) < 0 < float(wide.scale.grad)
    # Symmetric encodings keep their zero point on the grid's middle.
    assert not narrow.zero_point.requires_grad and float(narrow.zero_point) == 8.0


def test_zero_point_moves_range_towards_the_data():
    """Given data in [0, 1] and an asymmetric range [-0.5, 0.5], the zero point's gradient is positive:
    gradient descent lowers z, which shifts the top of the range, (Q − z)·s, up towards the clipped data."""
    x = torch.linspace(0, 1, 2001)
    q = _calibrated(-0.5, 0.5, QuantSpec(bitwidth=8))
    _mse_grads(q, x)
    assert float(q.zero_point.grad) > 0
    before = q.encoding.max.item()
    opt = torch.optim.SGD(q.parameters(), lr=50.0)
    for _ in range(20):
        opt.zero_grad()
        (q(x) - x).pow(2).mean().backward()
        opt.step()
    assert q.encoding.max.item() > before + 0.1


def test_gradient_scaling_and_reference_path_agree_with_fused_kernel():
    torch.manual_seed(1)
    x = torch.randn(6, 16) * 3
    spec = QuantSpec(bitwidth=4, granularity="per_channel", axis=0)
    scale0 = torch.rand(6) * 0.2 + 0.05
    zp0 = torch.full((6,), 7.0)
    grads = {}
    for name, g in (("fused_unscaled", 1.0), ("fused", None), ("reference", lsq_grad_factor(x, spec, 6))):
        s, z = scale0.clone().requires_grad_(), zp0.clone().requires_grad_()
        if name == "reference":
            y = _reference(x, spec, s, z, g)  # type: ignore[arg-type]
        else:
            y = learnable_fake_quantize(x, spec, s, z, grad_factor=g)
        (y * torch.linspace(-1, 1, 16)).sum().backward()
        grads[name] = (s.grad, z.grad)
    factor = lsq_grad_factor(x, spec, 6)
    assert factor == pytest.approx(1 / (16 * 15) ** 0.5)
    torch.testing.assert_close(grads["fused"][0], grads["fused_unscaled"][0] * factor)
    torch.testing.assert_close(grads["reference"][0], grads["fused"][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads["reference"][1], grads["fused"][1], rtol=1e-4, atol=1e-6)


def test_collapsed_range_stays_finite_and_recovers():
    q = _calibrated(0.0, 0.0, QuantSpec(bitwidth=8))
    q.enable_range_learning()
    with torch.no_grad():
        q.scale.zero_()
    x = torch.linspace(-1, 1, 101)
    opt = torch.optim.Adam(q.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        y = q(x)
        assert torch.isfinite(y).all()
        (y - x).pow(2).mean().backward()
        assert torch.isfinite(q.scale.grad).all() and torch.isfinite(q.zero_point.grad).all()
        opt.step()
    assert float(q.scale.detach()) > 1e-3
    assert torch.isfinite(q.encoding.scale).all()


def test_state_round_trip_in_place_updates_and_baking():
    spec = QuantSpec(bitwidth=8, symmetric=True, granularity="per_channel", axis=0)
    q = Quantizer(spec)
    q.compute_encoding_from(torch.randn(4, 3))
    q.enable_range_learning()
    assert isinstance(q, LearnableQuantizer)
    param = q.scale
    new = Encoding.from_min_max(-torch.ones(4), torch.ones(4), bitwidth=8, symmetric=True, spec=spec)
    q.set_encoding(new)
    assert q.scale is param and torch.equal(q.scale.detach(), new.scale)

    clone = Quantizer(spec)
    clone.compute_encoding_from(torch.randn(4, 3))
    clone.enable_range_learning()
    clone.load_state_dict(q.state_dict())
    assert clone.encoding.equals(q.encoding)

    with pytest.raises(LowbitError, match="disable_range_learning"):
        q.clear_encoding()
    expected = q.encoding
    q.disable_range_learning()
    assert type(q) is Quantizer and q.zero_point.dtype == torch.int32 and not q.scale.requires_grad
    assert q.encoding.equals(expected)


def test_uncalibrated_quantizer_refuses_range_learning():
    with pytest.raises(LowbitError, match="compute_encodings"):
        Quantizer(QuantSpec()).enable_range_learning()


def test_per_tensor_gradients_match_pytorchs_learnable_kernel():
    torch.manual_seed(2)
    x = (torch.randn(4, 8, 6) * 2).requires_grad_()
    spec = QuantSpec(bitwidth=4)
    results = []
    for use_torch in (False, True):
        xi = x.detach().clone().requires_grad_()
        s, z = torch.tensor([0.2], requires_grad=True), torch.tensor([6.0], requires_grad=True)
        g = lsq_grad_factor(xi, spec, 1)
        if use_torch:
            y = torch._fake_quantize_learnable_per_tensor_affine(xi, s, z, 0, spec.num_steps, g)
        else:
            y = learnable_fake_quantize(xi, spec, s, z)
        (y * torch.linspace(-1, 2, 6)).sum().backward()
        results.append((y.detach(), xi.grad, s.grad, z.grad))
    for mine, theirs in zip(*results, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
