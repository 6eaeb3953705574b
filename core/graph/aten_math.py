"""Stateless ATen math -> modules: ``aten.add`` -> ``ops.Add``, ``aten.relu`` -> ``nn.ReLU``, pools, resize, ...

Activations become torch's own activation modules; other math becomes a module from ``core.graph.ops``.
A converter declines (returns None) for argument combinations its module does not reproduce exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx, nn

from core.graph import ops
from core.graph.aten_registry import Conversion, ConversionContext, arg, register_aten


def _packet(node: fx.Node) -> str:
    name = node.target.overloadpacket.__name__  # type: ignore[union-attr]
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


def _simple(packets: tuple[str, ...], factory: Callable[[], nn.Module], name: str, arity: int) -> None:
    def convert(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
        if len(node.args) != arity or node.kwargs:
            return None
        return Conversion(factory(), tuple(node.args), name)

    register_aten(*packets)(convert)


_simple(("relu",), nn.ReLU, "relu", 1)
_simple(("relu6",), nn.ReLU6, "relu6", 1)
_simple(("sigmoid",), nn.Sigmoid, "sigmoid", 1)
_simple(("tanh",), nn.Tanh, "tanh", 1)
_simple(("silu",), nn.SiLU, "silu", 1)
_simple(("hardswish",), nn.Hardswish, "hardswish", 1)
_simple(("hardsigmoid",), nn.Hardsigmoid, "hardsigmoid", 1)
_simple(("mish",), nn.Mish, "mish", 1)
_simple(("matmul", "mm"), ops.MatMul, "matmul", 2)
_simple(("bmm",), ops.BMM, "bmm", 2)
_simple(("mul",), ops.Mul, "mul", 2)
_simple(("pow",), ops.Pow, "pow", 2)
_simple(("maximum",), ops.Maximum, "maximum", 2)
_simple(("minimum",), ops.Minimum, "minimum", 2)
_simple(("where",), ops.Where, "where", 3)
_simple(("masked_fill",), ops.MaskedFill, "masked_fill", 3)
for _op, _cls in {
    "sqrt": ops.Sqrt, "rsqrt": ops.Rsqrt, "exp": ops.Exp, "log": ops.Log, "erf": ops.Erf, "neg": ops.Neg,
    "abs": ops.Abs, "reciprocal": ops.Reciprocal, "square": ops.Square, "sin": ops.Sin, "cos": ops.Cos,
}.items():  # fmt: skip
    _simple((_op,), _cls, _op, 1)


@register_aten("add", "sub")
def _add_sub(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "alpha", 2, 1) != 1:
        return None
    name = _packet(node)
    return Conversion(ops.Add() if name == "add" else ops.Sub(), tuple(node.args[:2]), name)


@register_aten("rsub")
def _rsub(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "alpha", 2, 1) != 1:
        return None
    return Conversion(ops.Sub(), (node.args[1], node.args[0]), "sub")


@register_aten("div")
def _div(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    return Conversion(ops.Div(arg(node, "rounding_mode", 2)), tuple(node.args[:2]), "div")


def addmm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    """Generic ``addmm`` (core.graph.aten_layers registers the op: a Linear when its operands allow)."""
    module = ops.Addmm(beta=arg(node, "beta", 3, 1), alpha=arg(node, "alpha", 4, 1))
    return Conversion(module, tuple(node.args[:3]), "addmm")


@register_aten("baddbmm")
def _baddbmm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    module = ops.Baddbmm(beta=arg(node, "beta", 3, 1), alpha=arg(node, "alpha", 4, 1))
    return Conversion(module, tuple(node.args[:3]), "baddbmm")


@register_aten("cat", "concat", "concatenate")
def _cat(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    return Conversion(ops.Cat(arg(node, "dim", 1, 0)), tuple(node.args[0]), "cat")  # type: ignore[arg-type]


@register_aten("softmax", "_softmax")
def _softmax(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if _packet(node) == "softmax" and arg(node, "dtype", 2) is not None:
        return None
    return Conversion(ops.Softmax(node.args[1]), (node.args[0],), "softmax")  # type: ignore[arg-type]


@register_aten("log_softmax", "_log_softmax")
def _log_softmax(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if _packet(node) == "log_softmax" and arg(node, "dtype", 2) is not None:
        return None
    return Conversion(ops.LogSoftmax(node.args[1]), (node.args[0],), "log_softmax")  # type: ignore[arg-type]


def _reduction(cls: type[ops.Mean] | type[ops.Sum], name: str) -> None:
    def convert(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
        if arg(node, "dtype", 3) is not None or (len(node.args) == 1 and node.kwargs):
            return None
        dims = arg(node, "dim", 1)
        return Conversion(cls(dims, arg(node, "keepdim", 2, False)), (node.args[0],), name)

    register_aten(name)(convert)


@register_aten("linalg_vector_norm")
def _vector_norm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "dtype", 4) is not None:
        return None
    module = ops.VectorNorm(arg(node, "ord", 1, 2.0), arg(node, "dim", 2), arg(node, "keepdim", 3, False))
    return Conversion(module, (node.args[0],), "vector_norm")


_reduction(ops.Mean, "mean")
_reduction(ops.Sum, "sum")


@register_aten("hardtanh")
def _hardtanh(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    low, high = arg(node, "min_val", 1, -1.0), arg(node, "max_val", 2, 1.0)
    module = nn.ReLU6() if (low, high) == (0.0, 6.0) else nn.Hardtanh(low, high)
    return Conversion(module, (node.args[0],), "relu6" if isinstance(module, nn.ReLU6) else "hardtanh")


@register_aten("clamp")
def _clamp(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    low, high = arg(node, "min", 1), arg(node, "max", 2)
    if isinstance(low, fx.Node) or isinstance(high, fx.Node):
        return None
    return Conversion(ops.Clamp(low, high), (node.args[0],), "clamp")


@register_aten("clamp_min", "clamp_max")
def _clamp_one_side(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    bound = node.args[1]
    if not isinstance(bound, int | float):
        return None
    low, high = (bound, None) if _packet(node) == "clamp_min" else (None, bound)
    return Conversion(ops.Clamp(low, high), (node.args[0],), "clamp")


@register_aten("gelu")
def _gelu(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    return Conversion(nn.GELU(approximate=arg(node, "approximate", 1, "none")), (node.args[0],), "gelu")


@register_aten("leaky_relu")
def _leaky_relu(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    return Conversion(nn.LeakyReLU(arg(node, "negative_slope", 1, 0.01)), (node.args[0],), "leaky_relu")


@register_aten("elu")
def _elu(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "scale", 2, 1) != 1 or arg(node, "input_scale", 3, 1) != 1:
        return None
    return Conversion(nn.ELU(arg(node, "alpha", 1, 1.0)), (node.args[0],), "elu")


@register_aten("softplus")
def _softplus(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    module = nn.Softplus(arg(node, "beta", 1, 1.0), arg(node, "threshold", 2, 20.0))
    return Conversion(module, (node.args[0],), "softplus")


_MAX_POOL: dict[str, Any] = {
    "max_pool1d": nn.MaxPool1d,
    "max_pool2d": nn.MaxPool2d,
    "max_pool3d": nn.MaxPool3d,
}
_AVG_POOL: dict[str, Any] = {
    "avg_pool1d": nn.AvgPool1d,
    "avg_pool2d": nn.AvgPool2d,
    "avg_pool3d": nn.AvgPool3d,
}
_ADAPTIVE: dict[str, Any] = {
    "adaptive_avg_pool1d": nn.AdaptiveAvgPool1d,
    "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d,
    "_adaptive_avg_pool2d": nn.AdaptiveAvgPool2d,
    "adaptive_avg_pool3d": nn.AdaptiveAvgPool3d,
}


@register_aten(*_MAX_POOL)
def _max_pool(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    kernel = node.args[1]
    stride = arg(node, "stride", 2, None) or kernel
    module = _MAX_POOL[_packet(node)](
        kernel,
        stride=stride,
        padding=arg(node, "padding", 3, 0),
        dilation=arg(node, "dilation", 4, 1),
        ceil_mode=arg(node, "ceil_mode", 5, False),
    )
    return Conversion(module, (node.args[0],), "max_pool")


@register_aten(*_AVG_POOL)
def _avg_pool(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    name = _packet(node)
    kernel = node.args[1]
    kwargs: dict[str, Any] = {
        "stride": arg(node, "stride", 2, None) or kernel,
        "padding": arg(node, "padding", 3, 0),
        "ceil_mode": arg(node, "ceil_mode", 4, False),
        "count_include_pad": arg(node, "count_include_pad", 5, True),
    }
    if name != "avg_pool1d":
        kwargs["divisor_override"] = arg(node, "divisor_override", 6, None)
    return Conversion(_AVG_POOL[name](kernel, **kwargs), (node.args[0],), "avg_pool")


@register_aten(*_ADAPTIVE)
def _adaptive_avg_pool(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    cls = _ADAPTIVE[_packet(node)]
    size = node.args[1]
    return Conversion(cls(tuple(size) if isinstance(size, list) else size), (node.args[0],), "avg_pool")  # type: ignore[arg-type]


_RESIZE_MODES = {
    "upsample_nearest1d": "nearest",
    "upsample_nearest2d": "nearest",
    "upsample_nearest3d": "nearest",
    "_upsample_nearest_exact1d": "nearest-exact",
    "_upsample_nearest_exact2d": "nearest-exact",
    "_upsample_nearest_exact3d": "nearest-exact",
    "upsample_linear1d": "linear",
    "upsample_bilinear2d": "bilinear",
    "upsample_trilinear3d": "trilinear",
    "upsample_bicubic2d": "bicubic",
}


@register_aten(*_RESIZE_MODES)
def _resize(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if str(node.target).split(".")[-1] != "vec":
        return None  # the .default overloads carry per-axis scales that F.interpolate may not reproduce
    mode = _RESIZE_MODES[_packet(node)]
    size: Any = node.args[1]
    if mode.startswith("nearest"):
        align, scales = None, arg(node, "scale_factors", 2)
    else:
        align, scales = arg(node, "align_corners", 2), arg(node, "scale_factors", 3)
    if any(isinstance(v, fx.Node) for v in (*(size or ()), *(scales or ()))):
        return None  # sizes computed at run time
    module = ops.Interpolate(size=size, scale_factor=scales, mode=mode, align_corners=align)
    return Conversion(module, (node.args[0],), "interpolate")


@register_aten("scaled_dot_product_attention")
def _sdpa(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "enable_gqa", 7, False):
        return None
    module = ops.ScaledDotProductAttention(
        dropout_p=arg(node, "dropout_p", 4, 0.0),
        is_causal=arg(node, "is_causal", 5, False),
        scale=arg(node, "scale", 6),
    )
    return Conversion(module, (*node.args[:3], arg(node, "attn_mask", 3)), "attention")
