"""Shape manipulation, indexing and constants. Folded to constants whenever their inputs are static."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper

from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Dynamic, Static, Value, probe


def _ints(tensor: torch.Tensor | None) -> list[int] | None:
    return None if tensor is None else [int(v) for v in tensor.reshape(-1).tolist()]


def _axes(ctx: NodeContext, input_index: int, since_opset: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or the input (``since_opset`` on)."""
    if ctx.opset >= since_opset:
        return _ints(ctx.static(input_index, "axes"))
    axes = ctx.attr("axes")
    return None if axes is None else [int(a) for a in axes]


@converts("Identity", "Dropout")
def identity(ctx: NodeContext) -> list[Value | None]:
    if ctx.op_type == "Dropout" and len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise ctx.unsupported("the mask output")
    return [ctx.required(0)]


@converts("Constant")
def constant(ctx: NodeContext) -> list[Value | None]:
    for name, dtype in (("value_float", torch.float32), ("value_floats", torch.float32)):
        if ctx.attr(name) is not None:
            return [ctx.folded(torch.tensor(ctx.attr(name), dtype=dtype))]
    for name in ("value_int", "value_ints"):
        if ctx.attr(name) is not None:
            return [ctx.folded(torch.tensor(ctx.attr(name), dtype=torch.int64))]
    value = ctx.attr("value")
    if not isinstance(value, torch.Tensor):
        raise ctx.unsupported("only tensor, float(s) and int(s) constants are supported")
    return [ctx.folded(value)]


@converts("Cast")
def cast(ctx: NodeContext) -> list[Value | None]:
    to = int(ctx.attr("to"))
    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(to)
        dtype = torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype
    except (KeyError, TypeError) as exc:
        raise ctx.unsupported(f"cast to {TensorProto.DataType.Name(to)}") from exc
    return [ctx.call(runtime.cast, ctx.required(0), dtype)]


@converts("Shape")
def shape(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    results = [runtime.onnx_shape(p, start, end) for p in x.probes]
    # Dimensions equal on both probes do not depend on a dynamic input dimension: fold them.
    if all(torch.equal(results[0], r) for r in results[1:]):
        return [ctx.folded(results[0])]
    return [ctx.call(runtime.onnx_shape, x, start, end)]


@converts("Concat")
def concat(ctx: NodeContext) -> list[Value | None]:
    values = [v for v in ctx.inputs if v is not None]
    return [ctx.call(torch.cat, values, int(ctx.attr("axis")))]


@converts("Reshape")
def reshape(ctx: NodeContext) -> list[Value | None]:
    x, target = ctx.required(0), ctx.required(1)
    allowzero = int(ctx.attr("allowzero", 0))
    if isinstance(target, Static):
        dims = _ints(target.tensor) or []
        if 0 not in dims or allowzero:
            return [ctx.call(torch.reshape, x, dims)]
        return [ctx.call(runtime.onnx_reshape, x, dims, allowzero)]
    return [ctx.call(runtime.onnx_reshape, x, target, allowzero)]


@converts("Flatten")
def flatten(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    rank = probe(x).dim()
    axis = int(ctx.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis == 1 and rank >= 2:
        return [ctx.call(torch.flatten, x, 1)]
    return [ctx.call(runtime.onnx_flatten, x, axis)]


@converts("Transpose")
def transpose(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    perm = ctx.attr("perm") or list(reversed(range(probe(x).dim())))
    return [ctx.call(torch.permute, x, [int(p) for p in perm])]


@converts("Squeeze")
def squeeze(ctx: NodeContext) -> list[Value | None]:
    x, axes = ctx.required(0), _axes(ctx, 1, 13)
    if axes is None:
        return [ctx.call(torch.squeeze, x)]
    return [ctx.call(torch.squeeze, x, tuple(axes))]


@converts("Unsqueeze")
def unsqueeze(ctx: NodeContext) -> list[Value | None]:
    x, axes = ctx.required(0), _axes(ctx, 1, 13)
    if not axes:
        raise ctx.unsupported("axes are required")
    out_rank = probe(x).dim() + len(axes)
    out = x
    for axis in sorted(a + out_rank if a < 0 else a for a in axes):
        out = ctx.call(torch.unsqueeze, out, axis)
    return [out]


@converts("Gather")
def gather(ctx: NodeContext) -> list[Value | None]:
    x, indices = ctx.required(0), ctx.required(1)
    axis = int(ctx.attr("axis", 0)) % probe(x).dim()
    if isinstance(x, Dynamic) and isinstance(indices, Static) and indices.tensor.dim() == 0:
        index = int(indices.tensor)
        return [ctx.call(torch.select, x, axis, index)]
    return [ctx.call(runtime.onnx_gather, x, indices, axis)]


@converts("Slice")
def slice_(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes"), None
        return [ctx.call(runtime.onnx_slice, x, list(starts), list(ends), axes, steps)]
    axes, steps = _ints(ctx.static(3, "axes")), _ints(ctx.static(4, "steps"))
    starts_v, ends_v = ctx.required(1), ctx.required(2)
    starts = _ints(starts_v.tensor) if isinstance(starts_v, Static) else starts_v
    ends = _ints(ends_v.tensor) if isinstance(ends_v, Static) else ends_v
    if steps is not None and 0 in steps:
        raise ctx.unsupported("a step of 0")
    return [ctx.call(runtime.onnx_slice, x, starts, ends, axes, steps)]


@converts("ConstantOfShape")
def constant_of_shape(ctx: NodeContext) -> list[Value | None]:
    value = ctx.attr("value")
    fill = value if isinstance(value, torch.Tensor) else torch.zeros(1, dtype=torch.float32)
    # Static: a computed shape puts the call in the graph, where a tensor must be a buffer, not a literal.
    return [ctx.call(runtime.constant_of_shape, ctx.required(0), Static(fill))]


@converts("Expand")
def expand(ctx: NodeContext) -> list[Value | None]:
    target = ctx.required(1)
    dims = _ints(target.tensor) if isinstance(target, Static) else target
    return [ctx.call(runtime.expand, ctx.required(0), dims)]


@converts("Range")
def range_(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(torch.arange, ctx.required(0), ctx.required(1), ctx.required(2))]
