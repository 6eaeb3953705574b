"""Python-level functional math in a ``torch.fx.symbolic_trace`` graph -> modules (the fx fallback's table).

Keys are the callables (``operator.add``, ``torch.matmul``, ``F.relu``) or, for ``call_method`` nodes, the
method names (``"mean"``). Each entry turns a node into a :class:`~core.graph.aten_registry.Conversion`,
or declines (None) for argument combinations its module does not reproduce exactly.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from core.graph import ops
from core.graph.aten_registry import Conversion, arg

FxConverter = Callable[[fx.Node], Conversion | None]
_BY_FUNCTION: dict[Any, FxConverter] = {}
_BY_METHOD: dict[str, FxConverter] = {}


def register_fx(*targets: Any) -> Callable[[FxConverter], FxConverter]:
    """Decorator: converter for fx ``call_function`` targets (callables) and ``call_method`` names (str)."""

    def decorate(fn: FxConverter) -> FxConverter:
        for target in targets:
            if isinstance(target, str):
                _BY_METHOD[target] = fn
            else:
                _BY_FUNCTION[target] = fn
        return fn

    return decorate


def fx_converter_for(node: fx.Node) -> FxConverter | None:
    """The converter for a call_function / call_method node, if any."""
    if node.op == "call_method":
        return _BY_METHOD.get(str(node.target))
    if node.op == "call_function":
        try:
            return _BY_FUNCTION.get(node.target)
        except TypeError:  # unhashable target
            return None
    return None


def _binary(cls: type[nn.Module], name: str, *targets: Any) -> None:
    def convert(node: fx.Node) -> Conversion | None:
        if len(node.args) != 2 or node.kwargs:
            return None
        return Conversion(cls(), tuple(node.args), name)

    register_fx(*targets)(convert)


_binary(ops.Add, "add", operator.add, torch.add, "add")
_binary(ops.Sub, "sub", operator.sub, torch.sub, "sub")
_binary(ops.Mul, "mul", operator.mul, torch.mul, "mul")
_binary(ops.Div, "div", operator.truediv, torch.div, torch.true_divide, "div", "true_divide")
_binary(ops.MatMul, "matmul", operator.matmul, torch.matmul, torch.mm, "matmul", "mm")
_binary(ops.BMM, "bmm", torch.bmm, "bmm")
_binary(ops.Pow, "pow", operator.pow, torch.pow, "pow")
_binary(ops.Maximum, "maximum", torch.maximum, "maximum")
_binary(ops.Minimum, "minimum", torch.minimum, "minimum")


def _unary(factory: Callable[[], nn.Module], name: str, *targets: Any) -> None:
    def convert(node: fx.Node) -> Conversion | None:
        extra = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        if len(node.args) != 1 or extra:
            return None
        return Conversion(factory(), tuple(node.args), name)

    register_fx(*targets)(convert)


_unary(nn.ReLU, "relu", F.relu, torch.relu, "relu")
_unary(nn.ReLU6, "relu6", F.relu6)
_unary(nn.Sigmoid, "sigmoid", torch.sigmoid, F.sigmoid, "sigmoid")
_unary(nn.Tanh, "tanh", torch.tanh, F.tanh, "tanh")
_unary(nn.SiLU, "silu", F.silu)
_unary(nn.Hardswish, "hardswish", F.hardswish)
_unary(nn.Hardsigmoid, "hardsigmoid", F.hardsigmoid)
_unary(nn.Mish, "mish", F.mish)
_unary(ops.Sqrt, "sqrt", torch.sqrt, "sqrt")
_unary(ops.Rsqrt, "rsqrt", torch.rsqrt, "rsqrt")
_unary(ops.Exp, "exp", torch.exp, "exp")
_unary(ops.Log, "log", torch.log, "log")
_unary(ops.Erf, "erf", torch.erf, "erf")
_unary(ops.Neg, "neg", operator.neg, torch.neg, "neg")
_unary(ops.Abs, "abs", torch.abs, "abs")


@register_fx(F.gelu)
def _gelu(node: fx.Node) -> Conversion | None:
    return Conversion(nn.GELU(approximate=arg(node, "approximate", 1, "none")), (node.args[0],), "gelu")


@register_fx(F.leaky_relu)
def _leaky_relu(node: fx.Node) -> Conversion | None:
    return Conversion(nn.LeakyReLU(arg(node, "negative_slope", 1, 0.01)), (node.args[0],), "leaky_relu")


@register_fx(torch.cat, torch.concat, torch.concatenate)
def _cat(node: fx.Node) -> Conversion | None:
    tensors = arg(node, "tensors", 0)
    if not isinstance(tensors, list | tuple):
        return None
    return Conversion(ops.Cat(arg(node, "dim", 1, 0)), tuple(tensors), "cat")


@register_fx(F.softmax, torch.softmax, "softmax")
def _softmax(node: fx.Node) -> Conversion | None:
    dim = arg(node, "dim", 1)
    if dim is None or arg(node, "dtype", 3 if node.target is F.softmax else 2) is not None:
        return None
    return Conversion(ops.Softmax(dim), (node.args[0],), "softmax")


def _reduction(cls: type[ops.Mean] | type[ops.Sum], name: str, *targets: Any) -> None:
    def convert(node: fx.Node) -> Conversion | None:
        if arg(node, "dtype", 3) is not None or set(node.kwargs) - {"dim", "keepdim"}:
            return None
        return Conversion(cls(arg(node, "dim", 1), arg(node, "keepdim", 2, False)), (node.args[0],), name)

    register_fx(*targets)(convert)


_reduction(ops.Mean, "mean", torch.mean, "mean")
_reduction(ops.Sum, "sum", torch.sum, "sum")


@register_fx(F.interpolate)
def _interpolate(node: fx.Node) -> Conversion | None:
    if arg(node, "recompute_scale_factor", 5) or arg(node, "antialias", 6, False):
        return None
    size, scale = arg(node, "size", 1), arg(node, "scale_factor", 2)
    if any(isinstance(v, fx.Node) for v in (size, scale)):
        return None
    module = ops.Interpolate(size, scale, arg(node, "mode", 3, "nearest"), arg(node, "align_corners", 4))
    return Conversion(module, (node.args[0],), "interpolate")


@register_fx(F.layer_norm)
def _layer_norm(node: fx.Node) -> Conversion | None:
    shape = arg(node, "normalized_shape", 1)
    if isinstance(shape, fx.Node):
        return None
    module = ops.LayerNormFn(shape, arg(node, "eps", 4, 1e-5))
    return Conversion(module, (node.args[0], arg(node, "weight", 2), arg(node, "bias", 3)), "layer_norm")


@register_fx(F.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(node: fx.Node) -> Conversion | None:
    return Conversion(nn.AdaptiveAvgPool2d(arg(node, "output_size", 1)), (node.args[0],), "avg_pool")


@register_fx(F.avg_pool2d)
def _avg_pool2d(node: fx.Node) -> Conversion | None:
    if len(node.args) > 2 or set(node.kwargs) - {"kernel_size", "stride", "padding"}:
        return None
    kernel = arg(node, "kernel_size", 1)
    module = nn.AvgPool2d(kernel, arg(node, "stride", 2) or kernel, arg(node, "padding", 3, 0))
    return Conversion(module, (node.args[0],), "avg_pool")


@register_fx(F.max_pool2d)
def _max_pool2d(node: fx.Node) -> Conversion | None:
    if len(node.args) > 2 or set(node.kwargs) - {"kernel_size", "stride", "padding"}:
        return None
    kernel = arg(node, "kernel_size", 1)
    module = nn.MaxPool2d(kernel, arg(node, "stride", 2) or kernel, arg(node, "padding", 3, 0))
    return Conversion(module, (node.args[0],), "max_pool")


@register_fx(torch.where)
def _where(node: fx.Node) -> Conversion | None:
    if len(node.args) != 3 or node.kwargs:
        return None
    return Conversion(ops.Where(), tuple(node.args), "where")


@register_fx("masked_fill")
def _masked_fill(node: fx.Node) -> Conversion | None:
    if len(node.args) != 3 or node.kwargs:
        return None
    return Conversion(ops.MaskedFill(), tuple(node.args), "masked_fill")


# Python-level ops that only move data: no quantizer, no report. Extended by register_data_movement.
DATA_MOVEMENT_FUNCTIONS: set[Any] = {
    operator.getitem, getattr, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.split, torch.chunk, torch.stack, torch.narrow, F.dropout, F.pad, torch.zeros,
    torch.ones, torch.arange, torch.zeros_like, torch.ones_like, torch.full, torch.tensor, torch.select,
}  # fmt: skip
# The subset defined elsewhere whose outputs hold only values of their first input (quantsim looks
# through them: a quantized tensor stays quantized).
VALUE_PRESERVING_FUNCTIONS: set[Any] = set()
# The ONNX op a function defined elsewhere stands for (the converter's ``cast`` is a Cast), so that
# quantizer placement can apply the config's rule for that op type to the tensor it leaves.
FUNCTION_OP_TYPES: dict[Any, str] = {}


def register_function_op_type(function: Any, op_type: str) -> None:
    """Declare that ``function`` computes ONNX ``op_type`` (see FUNCTION_OP_TYPES)."""
    FUNCTION_OP_TYPES[function] = op_type


def register_data_movement(*functions: Any, value_preserving: bool = True) -> None:
    """Declare functions that graphs built elsewhere call (the ONNX converter's reshape/slice/gather
    helpers) as data movement: no module, no validator issue; ``value_preserving`` ones are looked
    through by quantizer placement."""
    DATA_MOVEMENT_FUNCTIONS.update(functions)
    if value_preserving:
        VALUE_PRESERVING_FUNCTIONS.update(functions)


# Pads called as ``f(x, pads, mode, value)`` (F.pad's argument order): a zero or copying pad keeps a
# quantized tensor on its grid (AIMET counts Pad as grid-preserving), which quantsim looks through.
PAD_FUNCTIONS: set[Any] = {F.pad}


def register_pad(*functions: Any) -> None:
    """Declare functions with F.pad's ``(x, pads, mode, value)`` order as pads (see PAD_FUNCTIONS)."""
    PAD_FUNCTIONS.update(functions)


DATA_MOVEMENT_METHODS: frozenset[str] = frozenset(
    {"view", "reshape", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze", "expand",
     "expand_as", "contiguous", "size", "dim", "split", "chunk", "to", "float", "half", "type", "type_as",
     "clone", "detach", "repeat", "narrow", "t", "numel", "unbind", "view_as", "reshape_as", "long", "int",
     "bool", "cpu", "cuda", "new_zeros", "new_ones", "new_full", "new_empty", "flip", "roll", "tile"}
)  # fmt: skip
