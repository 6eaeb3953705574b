"""Property tests of the quantization primitives: grid, round trip, clamping, identities, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import dequantize, fake_quantize, quantize
from tests.core.quant.encoding_cases import Case, cases, expanded, reference_fake_quant

PROPERTY = settings(max_examples=80, deadline=None)


@PROPERTY
@given(cases())
def test_fake_quantize_matches_independent_reference_bit_exactly(case: Case):
    torch.testing.assert_close(
        fake_quantize(case.x, case.encoding), reference_fake_quant(case.x, case.encoding), rtol=0, atol=0
    )


@PROPERTY
@given(cases())
def test_round_trip_error_at_most_half_a_step_inside_the_range(case: Case):
    s, o = expanded(case.x, case.encoding)
    lo, hi = o * s, (o + case.spec.num_steps) * s
    x = case.x.numpy()
    y = fake_quantize(case.x, case.encoding).numpy()
    inside = (x >= lo) & (x <= hi)
    # Half a step, plus float32 rounding of x·(1/s) and of the product (a few ulps of |x|).
    bound = s / 2 * (1 + 1e-5) + 4 * np.finfo(np.float32).eps * np.abs(x)
    assert np.all(np.abs(y - x)[inside] <= bound[inside])


@PROPERTY
@given(cases())
def test_values_outside_the_range_clamp_to_its_ends(case: Case):
    s, o = expanded(case.x, case.encoding)
    lo, hi = o * s, (o + np.float32(case.spec.num_steps)) * s
    x = case.x.numpy()
    y = fake_quantize(case.x, case.encoding).numpy()
    assert np.array_equal(y[x < lo], lo[x < lo])
    assert np.array_equal(y[x > hi], hi[x > hi])
    # Nothing ever leaves the range.
    assert np.all((y >= lo) & (y <= hi))


@PROPERTY
@given(cases())
def test_symmetric_grid_is_signed_and_centred(case: Case):
    enc = case.encoding
    half = 2 ** (case.spec.bitwidth - 1)
    if not case.spec.symmetric:
        assert torch.all(enc.offset <= 0)
        assert torch.all(enc.offset >= -case.spec.num_steps)
        assert torch.equal(enc.offset, enc.offset.round())
        return
    assert torch.all(enc.offset == -half)
    torch.testing.assert_close(enc.min, -half * enc.scale, rtol=0, atol=0)
    torch.testing.assert_close(enc.max, (half - 1) * enc.scale, rtol=0, atol=0)
    # The grid is its own mirror image except for the one extra negative code.
    codes = torch.arange(case.spec.num_steps + 1, dtype=torch.float32)
    grid = (codes - half) * enc.scale[0]
    assert torch.equal(-grid[1:], grid[1:].flip(0))
    assert float(grid[0]) == -half * float(enc.scale[0])


@PROPERTY
@given(cases())
def test_zero_is_exactly_representable(case: Case):
    zeros = torch.zeros_like(case.x)
    assert torch.equal(fake_quantize(zeros, case.encoding).abs(), zeros)
    # and it is a grid point: the zero point lies on the integer grid
    assert torch.all(case.encoding.zero_point >= 0)
    assert torch.all(case.encoding.zero_point <= case.spec.num_steps)


@PROPERTY
@given(cases())
def test_dequantize_of_quantize_equals_fake_quantize(case: Case):
    q = quantize(case.x, case.encoding)
    assert q.dtype == torch.int64
    assert int(q.min()) >= 0 and int(q.max()) <= case.spec.num_steps
    assert torch.equal(dequantize(q, case.encoding), fake_quantize(case.x, case.encoding))


@PROPERTY
@given(cases(), st.integers(0, 2**31 - 1))
def test_quantize_of_dequantize_is_identity_on_codes(case: Case, seed: int):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, case.spec.num_steps + 1, case.x.shape, generator=gen)
    assert torch.equal(quantize(dequantize(codes, case.encoding), case.encoding), codes)


def test_exact_ties_round_like_the_fused_kernel():
    # x = (k + 1/2)·s: x / s and x · (1/s) round differently on a large share of these; the integer
    # codes written to QDQ ONNX must reproduce the simulation (fake_quantize) exactly.
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        scale = torch.rand(1, generator=gen) * 0.1 + 1e-3
        enc = Encoding(QuantSpec(bitwidth=8), scale, torch.tensor([-128.0]))
        x = (torch.randint(-100, 100, (2000,), generator=gen).float() + 0.5) * scale
        assert torch.equal(dequantize(quantize(x, enc), enc), fake_quantize(x, enc))


@PROPERTY
@given(cases())
def test_straight_through_gradient_is_one_inside_zero_outside(case: Case):
    s, o = expanded(case.x, case.encoding)
    lo, hi = o * s, (o + case.spec.num_steps) * s
    x = case.x.clone().requires_grad_(True)
    fake_quantize(x, case.encoding).sum().backward()
    assert x.grad is not None
    grad = x.grad.numpy()
    xv = case.x.numpy()
    assert np.all(grad[(xv >= lo) & (xv <= hi)] == 1.0)
    # Within half a step beyond an end the value still rounds onto the grid: either gradient is fine.
    far = (xv < lo - s) | (xv > hi + s)
    assert np.all(grad[far] == 0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-60000, 60000, width=32), min_size=1, max_size=64))
def test_float16_encoding_rounds_through_half(values: list[float]):
    x = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    y = fake_quantize(x, Encoding.float16())
    assert torch.equal(y.detach(), x.detach().half().float())
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # type: ignore[arg-type]


def test_non_float32_inputs_keep_their_dtype():
    enc = Encoding.from_min_max(torch.tensor([-1.0]), torch.tensor([1.0]), bitwidth=8, symmetric=True)
    x = torch.linspace(-2, 2, 101, dtype=torch.float64)
    y = fake_quantize(x, enc)
    assert y.dtype == torch.float64
    assert torch.equal(y, fake_quantize(x.float(), enc).double())


def test_from_min_max_examples():
    enc = Encoding.from_min_max(torch.tensor([-1.0]), torch.tensor([3.0]), bitwidth=8, symmetric=False)
    assert float(enc.scale[0]) == pytest.approx(4 / 255)
    assert int(enc.offset[0]) == -64 and int(enc.zero_point[0]) == 64
    sym = Encoding.from_min_max(torch.tensor([-1.0]), torch.tensor([2.54]), bitwidth=8, symmetric=True)
    assert float(sym.scale[0]) == pytest.approx(2.54 / 127)
    assert int(sym.offset[0]) == -128
    # A range that excludes zero is widened to include it; a dead (all-zero) range still gets a usable scale.
    pos = Encoding.from_min_max(torch.tensor([2.0]), torch.tensor([4.0]), bitwidth=8, symmetric=False)
    assert float(pos.min[0]) == 0.0 and float(pos.max[0]) == pytest.approx(4.0)
    channels = QuantSpec(bitwidth=8, granularity="per_channel", axis=0)
    dead = Encoding.from_min_max(torch.zeros(3), torch.zeros(3), bitwidth=8, symmetric=False, spec=channels)
    assert torch.all(dead.scale > 1e-3)
    assert torch.equal(fake_quantize(torch.zeros(3, 2), dead), torch.zeros(3, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bitwidth": 1}, "choose 2..16"),
        ({"bitwidth": 17}, "choose 2..16"),
        ({"dtype": "float", "bitwidth": 8}, "choose 16"),
        ({"dtype": "bfloat"}, "choose 'int' or 'float'"),
        ({"granularity": "per_row"}, "per_tensor, per_channel or per_block"),
        ({"granularity": "per_channel"}, "needs a channel axis"),
        ({"granularity": "per_block", "axis": 0}, "block_size >= 1"),
    ],
)
def test_bad_specs_raise_config_errors_naming_the_choices(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QuantSpec(**kwargs)
