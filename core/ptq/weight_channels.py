"""Per-channel views of Conv / ConvTranspose / Linear weights, groups included.

A Conv weight is ``(C_out, C_in/groups, *k)``, a ConvTranspose weight ``(C_in, C_out/groups, *k)``
and a Linear weight ``(C_out, C_in)``. BN folding and cross-layer scaling multiply output or input
channels by a vector; these functions do that (and the matching absolute-max statistics) for
every layout, so the techniques never special-case a layer type.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.ptq.graph_walk import CONV_TRANSPOSE_TYPES


def _grouped(module: Any) -> tuple[torch.Tensor, int, bool]:
    if not module.weight.data.is_contiguous():  # type: ignore[union-attr]
        # In-place scaling goes through reshaped views, which must alias the parameter.
        module.weight.data = module.weight.data.contiguous()  # type: ignore[union-attr]
    weight = module.weight.data  # type: ignore[union-attr]
    groups = int(getattr(module, "groups", 1))
    return weight, groups, isinstance(module, CONV_TRANSPOSE_TYPES)


def _grouped_view(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(A, B, *k) -> (groups, A/groups, B, *k)."""
    return weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])


def num_out_channels(module: nn.Module) -> int:
    weight, groups, transposed = _grouped(module)
    return weight.shape[1] * groups if transposed else weight.shape[0]


def num_in_channels(module: nn.Module) -> int:
    weight, groups, transposed = _grouped(module)
    return weight.shape[0] if transposed else weight.shape[1] * groups


def _out_factor_view(module: Any, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weight, groups, transposed = _grouped(module)
    rest = [1] * (weight.dim() - 2)
    if not transposed:
        return weight, factor.reshape(-1, 1, *rest)
    view = _grouped_view(weight, groups)  # (g, Cin/g, Cout/g, *k)
    return view, factor.reshape(groups, 1, -1, *rest)


def _in_factor_view(module: Any, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weight, groups, transposed = _grouped(module)
    rest = [1] * (weight.dim() - 2)
    if transposed:
        return weight, factor.reshape(-1, 1, *rest)
    view = _grouped_view(weight, groups)  # (g, Cout/g, Cin/g, *k)
    return view, factor.reshape(groups, 1, -1, *rest)


def scale_out_channels(module: Any, factor: torch.Tensor) -> None:
    """Multiply output channel c of the weight (and bias) by ``factor[c]`` in place."""
    view, f = _out_factor_view(module, factor.to(module.weight.dtype))  # type: ignore[union-attr]
    view.mul_(f)
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias.data.mul_(factor.to(bias.dtype))


def scale_in_channels(module: Any, factor: torch.Tensor) -> None:
    """Multiply the weights that read input channel i by ``factor[i]`` in place."""
    view, f = _in_factor_view(module, factor.to(module.weight.dtype))  # type: ignore[union-attr]
    view.mul_(f)


def out_channel_absmax(module: nn.Module) -> torch.Tensor:
    """max |W| over everything that produces output channel c, shape (C_out,)."""
    weight, groups, transposed = _grouped(module)
    if not transposed:
        return weight.abs().reshape(weight.shape[0], -1).amax(1)
    view = _grouped_view(weight, groups).abs()  # (g, Cin/g, Cout/g, *k)
    return view.transpose(1, 2).reshape(groups * weight.shape[1], -1).amax(1)


def in_channel_absmax(module: nn.Module) -> torch.Tensor:
    """max |W| over everything that reads input channel i, shape (C_in,)."""
    weight, groups, transposed = _grouped(module)
    if transposed:
        return weight.abs().reshape(weight.shape[0], -1).amax(1)
    view = _grouped_view(weight, groups).abs()  # (g, Cout/g, Cin/g, *k)
    return view.transpose(1, 2).reshape(groups * weight.shape[1], -1).amax(1)


def in_channel_sum(module: Any, values: torch.Tensor) -> torch.Tensor:
    """Output-channel vector W·values: the response to a constant ``values[i]`` on input channel i
    (every spatial position), ignoring padding. Shape (C_out,)."""
    view, v = _in_factor_view(module, values.to(module.weight.dtype))  # type: ignore[union-attr]
    weighted = view * v
    weight, groups, transposed = _grouped(module)
    if not transposed:
        return weighted.reshape(weight.shape[0], -1).sum(1)
    # (Cin, Cout/g, *k) -> per output channel: sum over input rows of its group and kernel.
    grouped = _grouped_view(weighted, groups)  # (g, Cin/g, Cout/g, *k)
    return grouped.transpose(1, 2).reshape(groups * weight.shape[1], -1).sum(1)
