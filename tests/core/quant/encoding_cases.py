"""Hypothesis strategies for quantization tests, and an independent reference fake-quantizer.

A case is a spec, an encoding calibrated on random per-group ranges, and a tensor that reaches
well beyond those ranges (so clamping is exercised). The reference expands scale/offset per element
with its own code (loops and reshapes, not core.quant.grouping) and does the float32 arithmetic of
torch's fused kernel in NumPy, so a layout or rounding bug in core.quant cannot hide behind itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from core.quant.encoding import Encoding, QuantSpec


@dataclass(frozen=True)
class Case:
    spec: QuantSpec
    encoding: Encoding
    x: torch.Tensor


def _shape_and_spec(draw: st.DrawFn, bitwidth: int, symmetric: bool) -> tuple[tuple[int, ...], QuantSpec]:
    granularity = draw(st.sampled_from(["per_tensor", "per_channel", "per_block"]))
    if granularity == "per_tensor":
        shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
        return shape, QuantSpec(bitwidth=bitwidth, symmetric=symmetric)
    if granularity == "per_channel":
        axis = draw(st.sampled_from([0, 1]))
        shape = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=4)))
        return shape, QuantSpec(bitwidth=bitwidth, symmetric=symmetric, granularity="per_channel", axis=axis)
    # Per-block weights: Linear (out, in), Conv (out, in, k, k) with axis 0, ConvTranspose (in, out, k, k)
    # with axis 1; blocks run along the input channels.
    axis = draw(st.sampled_from([0, 1]))
    block = draw(st.sampled_from([1, 2, 4]))
    out_ch, in_ch = draw(st.integers(1, 5)), block * draw(st.integers(1, 4))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    shape = (out_ch, in_ch, *kernel) if axis == 0 else (in_ch, out_ch, *kernel)
    spec = QuantSpec(
        bitwidth=bitwidth, symmetric=symmetric, granularity="per_block", axis=axis, block_size=block
    )
    return shape, spec


def group_count(shape: tuple[int, ...], spec: QuantSpec) -> int:
    if spec.granularity == "per_tensor":
        return 1
    if spec.granularity == "per_channel":
        return shape[spec.axis]  # type: ignore[index]
    out_ch = shape[spec.axis]  # type: ignore[index]
    in_ch = shape[1 - spec.axis]  # type: ignore[operator]
    return out_ch * (in_ch // spec.block_size)  # type: ignore[operator]


@st.composite
def cases(draw: st.DrawFn, bitwidths: st.SearchStrategy[int] | None = None) -> Case:
    bitwidth = draw(bitwidths if bitwidths is not None else st.integers(2, 16))
    symmetric = draw(st.booleans())
    shape, spec = _shape_and_spec(draw, bitwidth, symmetric)
    groups = group_count(shape, spec)
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.sampled_from([1e-3, 0.1, 1.0, 30.0, 1e3]))
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(groups, generator=gen) * magnitude
    b = torch.randn(groups, generator=gen) * magnitude
    if draw(st.booleans()):  # all-positive ranges (post-ReLU activations)
        a, b = a.abs(), b.abs()
    encoding = Encoding.from_min_max(
        torch.minimum(a, b), torch.maximum(a, b), bitwidth=bitwidth, symmetric=symmetric, spec=spec
    )
    x = torch.randn(shape, generator=gen) * magnitude * 1.5
    return Case(spec, encoding, x)


def expanded(x: torch.Tensor, encoding: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """Per-element (scale, offset) as float32 arrays of x's shape, laid out independently of core.quant."""
    spec = encoding.spec
    scale = encoding.scale.numpy().astype(np.float32)
    offset = encoding.offset.numpy().astype(np.float32)
    shape = tuple(x.shape)
    s = np.empty(shape, np.float32)
    o = np.empty(shape, np.float32)
    if spec.granularity == "per_tensor":
        s[...], o[...] = scale[0], offset[0]
        return s, o
    axis = spec.axis % len(shape)  # type: ignore[operator]
    if spec.granularity == "per_channel":
        for c in range(shape[axis]):
            index = tuple(c if d == axis else slice(None) for d in range(len(shape)))
            s[index], o[index] = scale[c], offset[c]
        return s, o
    block_axis = 1 - axis
    bs = spec.block_size
    assert bs is not None
    blocks = shape[block_axis] // bs
    for c in range(shape[axis]):
        for k in range(blocks):
            index = [slice(None)] * len(shape)
            index[axis] = c  # type: ignore[call-overload]
            index[block_axis] = slice(k * bs, (k + 1) * bs)
            s[tuple(index)], o[tuple(index)] = scale[c * blocks + k], offset[c * blocks + k]
    return s, o


def reference_fake_quant(x: torch.Tensor, encoding: Encoding) -> torch.Tensor:
    """(clamp(rint(x · (1/s)), offset, offset + 2^b − 1)) · s in float32, element by element."""
    s, o = expanded(x, encoding)
    inv = (np.float32(1.0) / s).astype(np.float32)
    q = np.rint(x.numpy().astype(np.float32) * inv)
    q = np.minimum(np.maximum(q, o), o + np.float32(encoding.spec.num_steps))
    return torch.from_numpy((q * s).astype(np.float32))
