"""Activations and arithmetic: call_function nodes of torch functions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Static, Value

_UNARY = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Sqrt": torch.sqrt,
    "Erf": torch.erf,
    "Exp": torch.exp,
    "Log": torch.log,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Not": torch.logical_not,
    "HardSwish": F.hardswish,
}
_BINARY: dict[str, Callable[..., torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": runtime.onnx_div,
    "Pow": torch.pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "Greater": torch.gt,
    "And": torch.logical_and,
    "Or": torch.logical_or,
}


@converts(*_UNARY)
def unary(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(_UNARY[ctx.op_type], ctx.required(0))]


@converts(*_BINARY)
def binary(ctx: NodeContext) -> list[Value | None]:
    a, b = ctx.required(0), ctx.required(1)
    if ctx.op_type == "Pow" and isinstance(b, Static) and b.tensor.numel() == 1:
        # A scalar exponent keeps the base's dtype, as in ONNX (torch would promote int^float).
        return [ctx.call(torch.pow, a, b.tensor.reshape(()).item())]
    return [ctx.call(_BINARY[ctx.op_type], a, b)]


@converts("Gelu")
def gelu(ctx: NodeContext) -> list[Value | None]:
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.unsupported(f"approximate={approximate!r}; accepted: 'none', 'tanh'")
    return [ctx.call(F.gelu, ctx.required(0), approximate=approximate)]


@converts("LeakyRelu")
def leaky_relu(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(F.leaky_relu, ctx.required(0), float(ctx.attr("alpha", 0.01)))]


@converts("HardSigmoid")
def hard_sigmoid(ctx: NodeContext) -> list[Value | None]:
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return [ctx.call(F.hardsigmoid, ctx.required(0))]
    return [ctx.call(runtime.hard_sigmoid, ctx.required(0), alpha, beta)]


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
        return [ctx.call(torch.relu, x)]
    return [ctx.call(torch.clamp, x, low, high)]


@converts("Where")
def where(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(torch.where, ctx.required(0), ctx.required(1), ctx.required(2))]


@converts("Min", "Max", "Sum", "Mean")
def variadic(ctx: NodeContext) -> list[Value | None]:
    fn: Any = {"Min": torch.minimum, "Max": torch.maximum, "Sum": torch.add}.get(ctx.op_type, torch.add)
    values = [v for v in ctx.inputs if v is not None]
    out = values[0]
    for v in values[1:]:
        out = ctx.call(fn, out, v)
    if ctx.op_type == "Mean":
        out = ctx.call(torch.div, out, float(len(values)))
    return [out]
