"""Activations become modules (nn.ReLU6, nn.GELU, ...), so quantsim sees a layer followed by its
activation and forms the supergroups of AIMET's configs (Conv+Clip, Gemm+Relu, ...).

A call of a torch function would leave the activation as float math that capture cannot quantize
(a ``torch.clamp`` from ReLU6-as-Clip has no module), and the layer before it would keep its own
output quantizer. Activations of integer tensors (index arithmetic) and of constants stay functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.graph import ops
from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import ONNX_CLIP_BOUNDS, NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Dynamic, Static, Value, probe


def _activation(ctx: NodeContext, module: nn.Module, fn: Callable[..., Any], x: Value, *args: Any) -> Value:
    """``module(x)`` as a graph module for a float graph value; ``fn(x, *args)`` (folded or a call) otherwise."""
    if isinstance(x, Dynamic) and probe(x).is_floating_point():
        return ctx.module(module, x)
    return ctx.call(fn, x, *args)


_SIMPLE: dict[str, tuple[Callable[[], nn.Module], Callable[..., Any]]] = {
    "Relu": (nn.ReLU, torch.relu),
    "Sigmoid": (nn.Sigmoid, torch.sigmoid),
    "Tanh": (nn.Tanh, torch.tanh),
    "HardSwish": (nn.Hardswish, F.hardswish),
    "Softplus": (nn.Softplus, F.softplus),
    "Mish": (nn.Mish, F.mish),
}


@converts(*_SIMPLE)
def simple(ctx: NodeContext) -> list[Value | None]:
    factory, fn = _SIMPLE[ctx.op_type]
    return [_activation(ctx, factory(), fn, ctx.required(0))]


@converts("Swish")
def swish(ctx: NodeContext) -> list[Value | None]:
    """``x * sigmoid(alpha * x)`` (opset 24; also what core.io.onnx_convert.fusions makes of x*Sigmoid(x))."""
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha != 1.0:
        x = ctx.required(0)
        return [ctx.call(torch.mul, x, ctx.call(torch.sigmoid, ctx.call(torch.mul, x, alpha)))]
    return [_activation(ctx, nn.SiLU(), F.silu, ctx.required(0))]


@converts("Gelu")
def gelu(ctx: NodeContext) -> list[Value | None]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported(f"approximate={approximate!r}; accepted: 'none', 'tanh'")
    return [_activation(ctx, nn.GELU(approximate=approximate), F.gelu, ctx.required(0), approximate)]


@converts("LeakyRelu")
def leaky_relu(ctx: NodeContext) -> list[Value | None]:
    alpha = float(ctx.attr("alpha", 0.01))
    return [_activation(ctx, nn.LeakyReLU(alpha), F.leaky_relu, ctx.required(0), alpha)]


@converts("HardSigmoid")
def hard_sigmoid(ctx: NodeContext) -> list[Value | None]:
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    x = ctx.required(0)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return [_activation(ctx, nn.Hardsigmoid(), F.hardsigmoid, x)]
    return [ctx.call(runtime.hard_sigmoid, x, alpha, beta)]


@converts("PRelu")
def prelu(ctx: NodeContext) -> list[Value | None]:
    x, slope = ctx.required(0), ctx.required(1)
    rank = probe(x).dim()
    if isinstance(slope, Static) and isinstance(x, Dynamic) and probe(x).is_floating_point():
        weight = slope.tensor.detach().float()
        channels = probe(x).shape[1] if rank >= 2 else 1
        # nn.PReLU holds one slope, or one per channel (dimension 1) broadcast over the rest.
        per_channel = (
            rank >= 2
            and weight.numel() == channels
            and weight.dim() <= rank - 1
            and (weight.dim() == 0 or weight.shape[0] == channels or weight.numel() == 1)
            and all(d == 1 for d in weight.shape[1:])
        )
        if weight.numel() == 1 or per_channel:
            layer = nn.PReLU(weight.numel())
            layer.weight.data = weight.reshape(-1).clone()
            return [ctx.module(layer, x, params={"weight": 1})]
    return [ctx.call(runtime.prelu, x, slope)]


@converts("Clip")
def clip(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    if ctx.opset < 11:
        low, high = ctx.attr("min"), ctx.attr("max")
    else:
        low_t, high_t = ctx.static(1, "min"), ctx.static(2, "max")
        low = None if low_t is None else low_t.reshape(()).item()
        high = None if high_t is None else high_t.reshape(()).item()
    if low is None and high is None:
        return [x]
    if low == 0 and high is None:
        return [_activation(ctx, nn.ReLU(), torch.relu, x)]
    if low == 0 and high == 6:
        out = _activation(ctx, nn.ReLU6(), F.relu6, x)
    else:
        out = _activation(ctx, ops.Clamp(low, high), torch.clamp, x, low, high)
    bounds = list(ctx.node.input[1:3])
    if isinstance(out, Dynamic) and ctx.opset >= 11 and len(bounds) == 2 and all(bounds):
        out.node.meta[ONNX_CLIP_BOUNDS] = bounds  # export names its Clip's min/max after them
    return [out]
