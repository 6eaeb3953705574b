"""Views of a tensor as (groups, values) for per-tensor, per-channel and per-block statistics.

Range setters and fake-quantization both need "one row per group": per-tensor is one row,
per-channel one row per slice along the channel axis, per-block one row per (channel, block).
"""

from __future__ import annotations

from typing import cast

import torch

from core.errors import ConfigError
from core.quant.encoding import QuantSpec


def _block_layout(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Permute x to (channels, in_channels, *rest) with channels=spec.axis, in=spec.block_axis."""
    axis = spec.axis % x.dim()  # type: ignore[operator]
    block_axis = spec.block_axis if spec.block_axis is not None else (1 if axis == 0 else 0)
    block_axis %= x.dim()
    rest = [d for d in range(x.dim()) if d not in (axis, block_axis)]
    return x.permute(axis, block_axis, *rest)


def num_groups(shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> int:
    if spec.granularity == "per_tensor":
        return 1
    axis = spec.axis % len(shape)  # type: ignore[operator]
    if spec.granularity == "per_channel":
        return shape[axis]
    block_axis = spec.block_axis if spec.block_axis is not None else (1 if axis == 0 else 0)
    in_ch = shape[block_axis % len(shape)]
    if in_ch % spec.block_size:  # type: ignore[operator]
        raise ConfigError(
            f"block_size {spec.block_size} does not divide the {in_ch} input channels; "
            f"choose a divisor of {in_ch}"
        )
    return shape[axis] * (in_ch // spec.block_size)  # type: ignore[operator]


def as_groups(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Return a 2-D view/copy of x with one row per encoding group."""
    if spec.granularity == "per_tensor":
        return x.reshape(1, -1)
    if spec.granularity == "per_channel":
        axis = cast(int, spec.axis)
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)
    y = _block_layout(x, spec)
    channels, in_ch = y.shape[0], y.shape[1]
    bs = spec.block_size
    assert bs is not None
    y = y.reshape(channels, in_ch // bs, bs, -1)
    return y.reshape(channels * (in_ch // bs), -1)


def block_fake_quant_layout(
    x: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, tuple[int, ...], list[int]]:
    """Reshape x so that per-block groups lie along dim 0; returns (view, shape, permutation)."""
    y = _block_layout(x, spec)
    perm_shape = tuple(y.shape)
    channels, in_ch = y.shape[0], y.shape[1]
    bs = spec.block_size
    assert bs is not None
    return y.reshape(channels * (in_ch // bs), bs, *y.shape[2:]), perm_shape, _inverse_perm(x.dim(), spec)


def _inverse_perm(ndim: int, spec: QuantSpec) -> list[int]:
    axis = spec.axis % ndim  # type: ignore[operator]
    block_axis = spec.block_axis if spec.block_axis is not None else (1 if axis == 0 else 0)
    block_axis %= ndim
    rest = [d for d in range(ndim) if d not in (axis, block_axis)]
    perm = [axis, block_axis, *rest]
    inv = [0] * ndim
    for i, p in enumerate(perm):
        inv[p] = i
    return inv
