"""Layers with weights become real torch modules (nn.Conv*, nn.Linear, nn.BatchNorm*, nn.LayerNorm),
named after the ONNX node, so quantizer placement sees them as it sees a PyTorch model's layers."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Static, Value, probe

# Typed Any: torch's stubs want int-or-fixed-tuple sizes; lists of the right length are accepted at run time.
_CONV: dict[int, Any] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, Any] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_CONV_F = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_INSTANCE_NORM: dict[int, Any] = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _same_pads(
    ctx: NodeContext, x: Value, kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    sizes = [tuple(p.shape[2:]) for p in x.probes]
    if sizes[0] != sizes[1]:
        raise ctx.unsupported("auto_pad SAME needs static spatial sizes")
    begin, end = [], []
    for size, k, s, d in zip(sizes[0], kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        upper = ctx.attr("auto_pad") == "SAME_UPPER"
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return begin + end


def _pads(
    ctx: NodeContext, x: Value, kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    n = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(ctx, x, kernel, strides, dilations)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad != "NOTSET":
        raise ctx.unsupported(f"auto_pad {auto_pad!r}")
    return list(ctx.attr("pads", [0] * (2 * n)))


def pad_pairs(pads: list[int]) -> list[int]:
    """ONNX pads (all begins, then all ends) → F.pad's order (last dimension first, begin/end pairs)."""
    n = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [pads[axis], pads[axis + n]]
    return out


def split_padding(ctx: NodeContext, x: Value, pads: list[int], fill: float = 0.0) -> tuple[Value, list[int]]:
    """Symmetric pads stay a layer's padding; asymmetric ones become an explicit F.pad before it."""
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        return x, pads[:n]
    return ctx.call(F.pad, x, pad_pairs(pads), value=fill), [0] * n


@converts("Conv")
def conv(ctx: NodeContext) -> list[Value | None]:
    x, weight, bias = ctx.required(0), ctx.required(1), ctx.input(2)
    kernel = list(probe(weight).shape[2:])
    n = len(kernel)
    if n not in _CONV:
        raise ctx.unsupported(f"{n}-D convolution")
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    group = int(ctx.attr("group", 1))
    x, padding = split_padding(ctx, x, _pads(ctx, x, kernel, strides, dilations))
    if not isinstance(weight, Static) or (bias is not None and not isinstance(bias, Static)):
        return [ctx.call(_CONV_F[n], x, weight, bias, strides, padding, dilations, group)]
    w = weight.tensor
    layer = _CONV[n](
        w.shape[1] * group, w.shape[0], kernel, strides, padding, dilations, group, bias is not None
    )
    layer.weight.data = w.detach().clone().to(torch.float32)
    if isinstance(bias, Static):
        layer.bias.data = bias.tensor.detach().clone().to(torch.float32)  # type: ignore[union-attr]
    return [ctx.module(layer, x, params={"weight": 1, "bias": 2})]


@converts("ConvTranspose")
def conv_transpose(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    w, b = ctx.const(1, "weight"), ctx.static(2, "bias")
    kernel = list(w.shape[2:])
    n = len(kernel)
    if n not in _CONV_T:
        raise ctx.unsupported(f"{n}-D transposed convolution")
    if ctx.attr("output_shape") is not None or ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ctx.unsupported("output_shape / auto_pad SAME (give explicit pads)")
    pads = list(ctx.attr("pads", [0] * (2 * n)))
    if pads[:n] != pads[n:]:
        raise ctx.unsupported(f"asymmetric pads {pads}")
    group = int(ctx.attr("group", 1))
    layer = _CONV_T[n](
        w.shape[0],
        w.shape[1] * group,
        kernel,
        stride=list(ctx.attr("strides", [1] * n)),
        padding=pads[:n],
        output_padding=list(ctx.attr("output_padding", [0] * n)),
        groups=group,
        bias=b is not None,
        dilation=list(ctx.attr("dilations", [1] * n)),
    )
    layer.weight.data = w.detach().clone().to(torch.float32)
    if b is not None:
        layer.bias.data = b.detach().clone().to(torch.float32)  # type: ignore[union-attr]
    return [ctx.module(layer, x, params={"weight": 1, "bias": 2})]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = weight.detach().clone().to(torch.float32).contiguous()
    if bias is not None:
        layer.bias.data = bias.detach().clone().to(torch.float32).contiguous()  # type: ignore[union-attr]
    return layer


@converts("Gemm")
def gemm(ctx: NodeContext) -> list[Value | None]:
    a, b, c = ctx.required(0), ctx.required(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    if int(ctx.attr("transA", 0)):
        a = ctx.call(torch.transpose, a, 0, 1)
    trans_b = int(ctx.attr("transB", 0))
    if isinstance(b, Static) and (c is None or isinstance(c, Static)):
        weight = (b.tensor if trans_b else b.tensor.T) * alpha
        out_features = weight.shape[0]
        bias = None
        # Initializers scaled by alpha/beta or broadcast are not the user's tensors any more.
        same = {"weight": 1} if alpha == 1.0 else {}
        if c is not None:
            row = c.tensor.reshape(-1) if c.tensor.numel() in (1, out_features) else None
            if row is None:
                product = ctx.module(_linear(weight, None), a)
                return [ctx.call(torch.add, product, Static(c.tensor * beta))]
            bias = (row * beta).expand(out_features)
            if beta == 1.0 and c.tensor.numel() == out_features:
                same["bias"] = 2
        return [ctx.module(_linear(weight, bias), a, params=same)]
    bt = b if not trans_b else ctx.call(torch.transpose, b, 0, 1)
    y: Value = ctx.call(torch.matmul, a, bt)
    if alpha != 1.0:
        y = ctx.call(torch.mul, y, alpha)
    if c is not None:
        y = ctx.call(torch.add, y, c if beta == 1.0 else ctx.call(torch.mul, c, beta))
    return [y]


@converts("MatMul")
def matmul(ctx: NodeContext) -> list[Value | None]:
    a, b = ctx.required(0), ctx.required(1)
    # A constant 2-D right operand is a linear layer's weight (transformers' projections).
    if (
        isinstance(b, Static)
        and b.tensor.dim() == 2
        and b.tensor.is_floating_point()
        and not isinstance(a, Static)
    ):
        return [ctx.module(_linear(b.tensor.T, None), a, params={"weight": 1})]
    return [ctx.call(torch.matmul, a, b)]


@converts("BatchNormalization")
def batch_norm(ctx: NodeContext) -> list[Value | None]:
    if int(ctx.attr("training_mode", 0)):
        raise ctx.unsupported("training_mode=1 (export the model in eval mode)")
    x = ctx.required(0)
    scale, bias, mean, var = (
        ctx.const(i, name) for i, name in enumerate(("scale", "bias", "mean", "var"), 1)
    )
    rank = probe(x).dim()
    if rank not in _BN:
        raise ctx.unsupported(f"input rank {rank}")
    layer = _BN[rank](scale.numel(), eps=float(ctx.attr("epsilon", 1e-5)))
    layer.weight.data = scale.detach().clone().float()
    layer.bias.data = bias.detach().clone().float()
    layer.running_mean.data = mean.detach().clone().float()  # type: ignore[union-attr]
    layer.running_var.data = var.detach().clone().float()  # type: ignore[union-attr]
    return [ctx.module(layer, x, params={"weight": 1, "bias": 2})]


@converts("InstanceNormalization")
def instance_norm(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    scale, bias = ctx.const(1, "scale"), ctx.const(2, "B")
    rank = probe(x).dim()
    if rank not in _INSTANCE_NORM:
        raise ctx.unsupported(f"input rank {rank}")
    layer = _INSTANCE_NORM[rank](scale.numel(), eps=float(ctx.attr("epsilon", 1e-5)), affine=True)
    layer.weight.data = scale.detach().clone().float()
    layer.bias.data = bias.detach().clone().float()
    return [ctx.module(layer, x, params={"weight": 1, "bias": 2})]


@converts("LayerNormalization")
def layer_norm(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    scale, bias = ctx.const(1, "scale"), ctx.static(2, "bias")
    rank = probe(x).dim()
    axis = int(ctx.attr("axis", -1)) % rank
    shapes = [tuple(p.shape[axis:]) for p in x.probes]
    if shapes[0] != shapes[1]:
        raise ctx.unsupported("normalized dimensions must be static")
    layer = nn.LayerNorm(list(shapes[0]), eps=float(ctx.attr("epsilon", 1e-5)), bias=bias is not None)
    layer.weight.data = scale.detach().clone().float().expand(shapes[0]).contiguous()
    if bias is not None:
        layer.bias.data = bias.detach().clone().float().expand(shapes[0]).contiguous()  # type: ignore[union-attr]
    if len(ctx.node.output) > 1 and any(ctx.node.output[1:]):
        raise ctx.unsupported("Mean/InvStdDev outputs")
    same = {"weight": 1, "bias": 2} if tuple(scale.shape) == shapes[0] else {}
    return [ctx.module(layer, x, params=same)]
