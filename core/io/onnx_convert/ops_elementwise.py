"""Activations and arithmetic: call_function nodes of torch functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Dynamic, Static, Value, probe

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
    "IsNaN": torch.isnan,
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
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
    "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge,
    "Xor": torch.logical_xor,
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
    if ctx.op_type == "Div" and probe(a).is_floating_point():
        return [ctx.call(torch.div, a, b)]  # a torch function capture turns into a Div module
    return [ctx.call(_BINARY[ctx.op_type], a, b)]


@converts("Mod")
def mod(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(runtime.onnx_mod, ctx.required(0), ctx.required(1), int(ctx.attr("fmod", 0)))]


@converts("IsInf")
def is_inf(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    positive, negative = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))
    if positive and negative:
        return [ctx.call(torch.isinf, x)]
    return [ctx.call(torch.isposinf if positive else torch.isneginf, x)]


@converts("Where")
def where(ctx: NodeContext) -> list[Value | None]:
    cond, x, y = ctx.required(0), ctx.required(1), ctx.required(2)
    # A scalar constant branch (a mask's -inf or finfo.min) becomes a Python number: no quantizer
    # would represent it, and an 8-bit grid over {finfo.min, scores} would erase the scores.
    if isinstance(cond, Dynamic) and probe(x).is_floating_point() and probe(y).is_floating_point():
        x_arg, y_arg = _scalar(x), _scalar(y)
        if isinstance(x_arg, float) and isinstance(y_arg, float):
            x_arg = x  # one tensor keeps the result's dtype and shape
        return [ctx.call(torch.where, cond, x_arg, y_arg)]
    return [ctx.call(torch.where, cond, x, y)]


def _scalar(value: Value) -> Value | float:
    if isinstance(value, Static) and value.tensor.numel() == 1 and value.tensor.is_floating_point():
        return float(value.tensor.reshape(()))
    return value


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
