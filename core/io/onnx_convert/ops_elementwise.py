"""Activations and arithmetic: call_function nodes of torch functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Static, Value

_UNARY = {
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
