"""Shape arithmetic of a ``torch.export`` graph, re-emitted so that traced exports keep it symbolic.

A program exported with dynamic dimensions computes sizes at run time: ``aten.sym_size.int(x, 0)`` feeds
``aten.view(y, [s, 16, -1])``, ``aten.expand``, ``aten.arange``, ``aten.slice``. Called as ATen overloads,
those take plain ints, so the TorchScript tracer behind the ONNX export records the example's batch size
as a constant (a QDQ model that fails in ONNX Runtime at any other batch size). Called as tensor methods
and torch functions (``x.size(0)``, ``y.view(...)``, ``torch.arange(s)``, ``x[:, :s]``) the tracer records
the sizes as graph values instead. This module rewrites exactly those nodes; in eager mode both forms
compute the same thing. ``aten.diff`` (no TorchScript ONNX symbolic) is re-emitted as slices likewise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from core.graph.aten_registry import arg, packet_name


def slice_dim(x: torch.Tensor, dim: int, start: Any, end: Any, step: int) -> torch.Tensor:
    """``aten.slice.Tensor`` as Python indexing (which the tracer records with symbolic bounds)."""
    index = [slice(None)] * (dim % x.dim())
    index.append(slice(start, end, step))
    return x[tuple(index)]


def diff_slices(
    x: torch.Tensor, n: int = 1, dim: int = -1, prepend: Any = None, append: Any = None
) -> torch.Tensor:
    """``aten.diff`` as concatenation, slices and a subtraction, which the TorchScript exporter has."""
    parts = [p for p in (prepend, x, append) if p is not None]
    if len(parts) > 1:
        x = torch.cat(parts, dim)
    for _ in range(n):
        x = x.narrow(dim, 1, x.size(dim) - 1) - x.narrow(dim, 0, x.size(dim) - 1)
    return x


def _diff(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
    args = (
        node.args[0],
        arg(node, "n", 1, 1),
        arg(node, "dim", 2, -1),
        arg(node, "prepend", 3),
        arg(node, "append", 4),
    )
    return graph.call_function(diff_slices, remap(args))


def cumsum_widened(x: torch.Tensor, dim: int, dtype: Any = None) -> torch.Tensor:
    """``aten.cumsum``; a bool input is summed as int64 (what torch returns), which ONNX CumSum accepts."""
    return torch.cumsum(x.long() if x.dtype == torch.bool else x, dim, dtype=dtype)


def _cumsum(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
    return graph.call_function(cumsum_widened, remap((node.args[0], node.args[1], arg(node, "dtype", 2))))


def _is_symbolic(item: Any) -> bool:
    if not isinstance(item, fx.Node):
        return False
    return isinstance(item.meta.get("val"), torch.SymInt | torch.SymFloat) or packet_name(item.target) in (
        "sym_size",
        "sym_numel",
    )


def _uses_symbolic(node: fx.Node) -> bool:
    found: list[bool] = []
    fx.node.map_aggregate((node.args, node.kwargs), lambda a: found.append(_is_symbolic(a)))
    return any(found)


def _factory_kwargs(node: fx.Node) -> dict[str, Any]:
    return {k: node.kwargs[k] for k in ("dtype", "device") if node.kwargs.get(k) is not None}


Emit = Callable[[fx.Node, fx.Graph, Callable[[Any], Any]], fx.Node]


def _method(name: str, arity: int) -> Emit:
    def emit(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
        return graph.call_method(name, remap(tuple(node.args[:arity])))

    return emit


def _arange(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
    return graph.call_function(torch.arange, remap(tuple(node.args)), remap(_factory_kwargs(node)))


def _filled(fn: Any) -> Emit:
    def emit(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
        return graph.call_function(fn, remap(tuple(node.args)), remap(_factory_kwargs(node)))

    return emit


def _slice(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node:
    args = (
        node.args[0],
        arg(node, "dim", 1, 0),
        arg(node, "start", 2),
        arg(node, "end", 3),
        arg(node, "step", 4, 1),
    )
    return graph.call_function(slice_dim, remap(args))


# Packet -> how to emit it when its arguments hold run-time sizes (sym_size/sym_numel always).
_EMITTERS: dict[str, Emit] = {
    "view": _method("view", 2),
    "_unsafe_view": _method("view", 2),
    "reshape": _method("reshape", 2),
    "expand": _method("expand", 2),
    "repeat": _method("repeat", 2),
    "new_zeros": _method("new_zeros", 2),
    "new_ones": _method("new_ones", 2),
    "arange": _arange,
    "zeros": _filled(torch.zeros),
    "ones": _filled(torch.ones),
    "full": _filled(torch.full),
    "slice": _slice,
}
# diff and cumsum: transformers' masks use them on int/bool tensors; the TorchScript ONNX exporter has no
# aten::diff and writes CumSum on bool, which ONNX Runtime refuses.
_ALWAYS: dict[str, Emit] = {
    "sym_size": _method("size", 2),
    "sym_numel": _method("numel", 1),
    "diff": _diff,
}
_NON_FLOAT: dict[str, Emit] = {"cumsum": _cumsum}


def emit_symbolic(node: fx.Node, graph: fx.Graph, remap: Callable[[Any], Any]) -> fx.Node | None:
    """The traceable form of ``node`` when it reads or computes run-time sizes, else None."""
    name = packet_name(node.target)
    if name in _ALWAYS:
        return _ALWAYS[name](node, graph, remap)
    val = node.meta.get("val")
    if name in _NON_FLOAT and isinstance(val, torch.Tensor) and not val.is_floating_point():
        return _NON_FLOAT[name](node, graph, remap)
    if name in _EMITTERS and _uses_symbolic(node):
        return _EMITTERS[name](node, graph, remap)
    return None
