"""Indexing, scans and padding that exporters write for position ids, masks and windows
(GatherElements, GatherND, CumSum, Split, Pad, Tile, Trilu). Folded when their inputs are static."""

from __future__ import annotations

import operator

import torch

from core.io.onnx_convert import runtime
from core.io.onnx_convert.context import NodeContext
from core.io.onnx_convert.ops_nn import pad_pairs
from core.io.onnx_convert.registry import converts
from core.io.onnx_convert.values import Static, Value, probe


def _ints(tensor: torch.Tensor) -> list[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


@converts("GatherElements")
def gather_elements(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    axis = int(ctx.attr("axis", 0)) % probe(x).dim()
    return [ctx.call(runtime.gather_elements, x, ctx.required(1), axis)]


@converts("GatherND")
def gather_nd(ctx: NodeContext) -> list[Value | None]:
    return [ctx.call(runtime.gather_nd, ctx.required(0), ctx.required(1), int(ctx.attr("batch_dims", 0)))]


@converts("CumSum")
def cumsum(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    axis = int(ctx.const(1, "axis").reshape(())) % probe(x).dim()
    exclusive, reverse = int(ctx.attr("exclusive", 0)), int(ctx.attr("reverse", 0))
    return [ctx.call(runtime.cumsum, x, axis, exclusive, reverse)]


@converts("Split")
def split(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    axis = int(ctx.attr("axis", 0)) % probe(x).dim()
    sizes = ctx.attr("split") if ctx.opset < 13 else None
    if ctx.opset >= 13:
        given = ctx.static(1, "split")
        sizes = None if given is None else _ints(given)
    outputs = len(ctx.node.output)
    if sizes:
        whole = ctx.call(runtime.onnx_split, x, [int(s) for s in sizes], axis)
    else:
        parts = int(ctx.attr("num_outputs", outputs))
        whole = ctx.call(runtime.onnx_split_even, x, parts, axis)
    return [ctx.call(operator.getitem, whole, i) for i in range(outputs)]


@converts("Pad")
def pad(ctx: NodeContext) -> list[Value | None]:
    x = ctx.required(0)
    rank = probe(x).dim()
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise ctx.unsupported(f"mode {mode!r}; accepted: constant, reflect, edge")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
    else:
        fill = ctx.static(2, "constant_value")
        value = 0.0 if fill is None or fill.numel() == 0 else float(fill.reshape(-1)[0])
        given = ctx.required(1)
        if not isinstance(given, Static):  # sizes computed from the input's shape (window padding)
            if ctx.input(3) is not None:
                raise ctx.unsupported("computed pads together with axes")
            return [ctx.call(runtime.onnx_pad_computed, x, given, mode, value)]
        pads = _ints(given.tensor)
        axes_t = ctx.static(3, "axes")
        if axes_t is not None:
            axes = [a % rank for a in _ints(axes_t)]
            full = [0] * (2 * rank)
            for i, a in enumerate(axes):
                full[a], full[a + rank] = pads[i], pads[i + len(axes)]
            pads = full
    torch_pads = pad_pairs(pads)
    # F.pad takes pairs from the last dimension; leading all-zero pairs can be dropped.
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    return [ctx.call(runtime.onnx_pad, x, torch_pads, mode, value)]


@converts("Tile")
def tile(ctx: NodeContext) -> list[Value | None]:
    repeats = ctx.required(1)
    reps = _ints(repeats.tensor) if isinstance(repeats, Static) else repeats
    return [ctx.call(runtime.tile, ctx.required(0), reps)]


@converts("Trilu")
def trilu(ctx: NodeContext) -> list[Value | None]:
    k = ctx.static(1, "k")
    return [
        ctx.call(
            runtime.trilu, ctx.required(0), 0 if k is None else int(k.reshape(())), int(ctx.attr("upper", 1))
        )
    ]
