"""Pooling, Softmax, reductions and Resize."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.graph import ops
from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.ops_nn import pad_pairs
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Dynamic, Static, Value, probe

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOL_LAYER: dict[int, Any] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVG_POOL_LAYER: dict[int, Any] = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_GLOBAL_AVG_LAYER: dict[int, Any] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
_GLOBAL_MAX_LAYER: dict[int, Any] = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d}
_GLOBAL_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_GLOBAL_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _pool_geometry(ctx: NodeContext) -> tuple[list[int], list[int], list[int]]:
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    n = len(kernel)
    if n not in _MAX_POOL:
        raise ctx.unsupported(f"{n}-D pooling")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise ctx.unsupported(f"auto_pad {auto_pad!r} (give explicit pads)")
    pads = [0] * (2 * n) if auto_pad == "VALID" else [int(p) for p in ctx.attr("pads", [0] * (2 * n))]
    return kernel, [int(s) for s in ctx.attr("strides", [1] * n)], pads


@converts("MaxPool")
def max_pool(ctx: NodeContext) -> list[Value | None]:
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise ctx.unsupported("the Indices output")
    x = ctx.required(0)
    kernel, strides, pads = _pool_geometry(ctx)
    n = len(kernel)
    dilations = [int(d) for d in ctx.attr("dilations", [1] * n)]
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    padding = pads[:n]
    # torch pools pad symmetrically and at most half a kernel: pad explicitly otherwise.
    if pads[:n] != pads[n:] or any(p > k // 2 for p, k in zip(padding, kernel, strict=True)):
        x = ctx.call(F.pad, x, pad_pairs(pads), value=float("-inf"))
        padding = [0] * n
    if isinstance(x, Dynamic) and probe(x).is_floating_point():
        layer = _MAX_POOL_LAYER[n](kernel, strides, padding, dilations, ceil_mode=ceil_mode)
        return [ctx.module(layer, x)]
    return [ctx.call(_MAX_POOL[n], x, kernel, strides, padding, dilations, ceil_mode)]


@converts("AveragePool")
def average_pool(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    kernel, strides, pads = _pool_geometry(ctx)
    n = len(kernel)
    if any(int(d) != 1 for d in ctx.attr("dilations", [1] * n)):
        raise ctx.unsupported("dilated average pooling")
    if pads[:n] != pads[n:] or any(p > k // 2 for p, k in zip(pads[:n], kernel, strict=True)):
        raise ctx.unsupported(f"pads {pads} (asymmetric or larger than half the kernel)")
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    include_pad = bool(ctx.attr("count_include_pad", 0))
    if isinstance(x, Dynamic):
        layer = _AVG_POOL_LAYER[n](kernel, strides, pads[:n], ceil_mode, include_pad)
        return [ctx.module(layer, x)]
    return [ctx.call(_AVG_POOL[n], x, kernel, strides, pads[:n], ceil_mode, include_pad)]


@converts("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    n = probe(x).dim() - 2
    table = _GLOBAL_AVG if ctx.op_type == "GlobalAveragePool" else _GLOBAL_MAX
    if n not in table:
        raise ctx.unsupported(f"input rank {n + 2}")
    layers = _GLOBAL_AVG_LAYER if ctx.op_type == "GlobalAveragePool" else _GLOBAL_MAX_LAYER
    if isinstance(x, Dynamic) and probe(x).is_floating_point() and n in layers:
        return [ctx.module(layers[n](1), x)]
    return [ctx.call(table[n], x, 1)]


@converts("Softmax", "LogSoftmax")
def softmax(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    log = ctx.op_type == "LogSoftmax"
    rank = probe(x).dim()
    axis = int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if ctx.opset < 13 and axis != rank - 1:
        return [ctx.call(runtime.softmax_2d, x, axis, log)]
    return [ctx.call(F.log_softmax if log else F.softmax, x, axis)]


@converts("ReduceL2")
def reduce_l2(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    if ctx.opset >= 18:
        axes_t = ctx.static(1, "axes")
        axes = None if axes_t is None else [int(a) for a in axes_t.reshape(-1).tolist()]
    else:
        axes = ctx.attr("axes")
    keepdims = bool(ctx.attr("keepdims", 1))
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return [x]
        axes = list(range(probe(x).dim()))
    dims = [int(a) for a in axes]
    if isinstance(x, Dynamic) and probe(x).is_floating_point():
        return [ctx.module(ops.VectorNorm(2.0, dims, keepdims), x)]
    return [ctx.call(torch.linalg.vector_norm, x, 2.0, dims, keepdims)]


@converts("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    since = 13 if ctx.op_type == "ReduceSum" else 18
    if ctx.opset >= since:
        axes_t = ctx.static(1, "axes")
        axes = None if axes_t is None else [int(a) for a in axes_t.reshape(-1).tolist()]
    else:
        axes = ctx.attr("axes")
    keepdims = bool(ctx.attr("keepdims", 1))
    if not axes:
        if int(ctx.attr("noop_with_empty_axes", 0)):
            return [x]
        axes = list(range(probe(x).dim()))
    dims = [int(a) for a in axes]
    if ctx.op_type == "ReduceMean":
        return [ctx.call(torch.mean, x, dims, keepdims)]
    if ctx.op_type == "ReduceSum":
        return [ctx.call(torch.sum, x, dims, keepdims)]
    fn = torch.amax if ctx.op_type == "ReduceMax" else torch.amin
    return [ctx.call(fn, x, dims, keepdims)]


def _resize_mode(ctx: NodeContext, rank: int) -> tuple[str, bool | None]:
    mode = ctx.attr("mode", "nearest")
    transform = ctx.attr("coordinate_transformation_mode", "half_pixel")
    if int(ctx.attr("antialias", 0)) or int(ctx.attr("exclude_outside", 0)):
        raise ctx.unsupported("antialias / exclude_outside")
    if mode == "nearest":
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
        if transform == "asymmetric" and nearest == "floor":
            return "nearest", None
        if transform in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return "nearest-exact", None
        raise ctx.unsupported(
            f"nearest with {transform!r}/{nearest!r}; accepted: asymmetric/floor, half_pixel/round_prefer_ceil"
        )
    torch_mode = {"linear": {3: "linear", 4: "bilinear", 5: "trilinear"}, "cubic": {4: "bicubic"}}
    name = torch_mode.get(mode, {}).get(rank)
    if name is None:
        raise ctx.unsupported(f"mode {mode!r} on rank-{rank} input")
    if mode == "cubic" and float(ctx.attr("cubic_coeff_a", -0.75)) != -0.75:
        raise ctx.unsupported("cubic_coeff_a other than -0.75")
    if transform == "align_corners":
        return name, True
    if transform in ("half_pixel", "pytorch_half_pixel"):
        return name, False
    raise ctx.unsupported(f"coordinate_transformation_mode {transform!r}")


@converts("Resize", "Upsample")
def resize(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    rank = probe(x).dim()
    if ctx.attr("axes") is not None:
        raise ctx.unsupported("the axes attribute")
    mode, align_corners = _resize_mode(ctx, rank)
    scales_index = 1 if ctx.op_type == "Upsample" or ctx.opset < 11 else 2
    scales = ctx.static(scales_index, "scales")
    sizes = ctx.input(3) if scales_index == 2 else None
    if scales is not None and scales.numel() > 0:
        factors = [float(s) for s in scales.tolist()]
        if factors[:2] != [1.0, 1.0]:
            raise ctx.unsupported("scaling of the batch or channel dimension")
        return [ctx.call(F.interpolate, x, None, factors[2:], mode, align_corners)]
    if isinstance(sizes, Static):
        size = [int(s) for s in sizes.tensor.tolist()[2:]]
        return [ctx.call(F.interpolate, x, size, None, mode, align_corners)]
    if sizes is not None:
        return [ctx.call(runtime.interpolate_to_size, x, sizes, mode, align_corners)]
    raise ctx.unsupported("neither scales nor sizes given")
