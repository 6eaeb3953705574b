"""The graph under construction and the per-node view handlers work with."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from core.errors import ModelLoadError, UnsupportedOpError
from core.io.onnx_convert.values import Dynamic, Static, Value

# Graph-node meta keys: the ONNX tensor a node computes, and the initializers its module's
# parameters came from (read by core.export to keep the user's tensor names).
ONNX_TENSOR = "onnx_tensor"
ONNX_PARAMS = "onnx_params"
ONNX_CLIP_BOUNDS = "onnx_clip_bounds"

# A folded constant bigger than this is refused: a crafted ConstantOfShape/Expand must not make
# conversion allocate gigabytes.
MAX_FOLDED_ELEMENTS = 1 << 27


class GraphBuilder:
    """Owns the fx graph, the root module that holds submodules and constant buffers, and names."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self._names: set[str] = set()
        self._buffers: dict[int, fx.Node] = {}

    def unique_name(self, hint: str) -> str:
        name = re.sub(r"[^0-9A-Za-z_]", "_", hint).strip("_") or "node"
        if name[0].isdigit():
            name = f"m_{name}"
        candidate, i = name, 1
        while candidate in self._names or hasattr(self.root, candidate):
            candidate, i = f"{name}_{i}", i + 1
        self._names.add(candidate)
        return candidate

    def constant_node(self, tensor: torch.Tensor, hint: str = "const") -> fx.Node:
        """A get_attr node for a static tensor (registered once as a buffer of the root)."""
        key = id(tensor)
        if key not in self._buffers:
            name = self.unique_name(hint)
            self.root.register_buffer(name, tensor)
            self._buffers[key] = self.graph.get_attr(name)
        return self._buffers[key]

    def to_graph_arg(self, arg: Any) -> Any:
        if isinstance(arg, Dynamic):
            return arg.node
        if isinstance(arg, Static):
            return self.constant_node(arg.tensor)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.to_graph_arg(a) for a in arg)
        return arg


def _has_dynamic(arg: Any) -> bool:
    if isinstance(arg, Dynamic):
        return True
    if isinstance(arg, (list, tuple)):
        return any(_has_dynamic(a) for a in arg)
    return False


def _on_probe(arg: Any, index: int) -> Any:
    if isinstance(arg, (Static, Dynamic)):
        return arg.probes[index]
    if isinstance(arg, (list, tuple)):
        return type(arg)(_on_probe(a, index) for a in arg)
    return arg


class NodeContext:
    """One ONNX node being converted: its inputs as values, its attributes, and graph-building calls."""

    def __init__(self, builder: GraphBuilder, node: onnx.NodeProto, inputs: list[Value | None], opset: int):
        self.builder = builder
        self.node = node
        self.inputs = inputs
        self.opset = opset
        self.op_type = node.op_type
        self._attrs = {a.name: a for a in node.attribute}

    # ---- reading the node
    def input(self, index: int) -> Value | None:
        """Input ``index`` (None when absent or given as an empty name)."""
        return self.inputs[index] if index < len(self.inputs) else None

    def required(self, index: int) -> Value:
        value = self.input(index)
        if value is None:
            raise self.unsupported(f"input {index} is missing")
        return value

    def static(self, index: int, what: str) -> torch.Tensor | None:
        """The tensor of a static input (None when absent); a dynamic one is unsupported."""
        value = self.input(index)
        if value is None:
            return None
        if not isinstance(value, Static):
            raise self.unsupported(f"{what} (input {index}) must be a constant")
        return value.tensor

    def const(self, index: int, what: str) -> torch.Tensor:
        """The tensor of a required static input."""
        tensor = self.static(index, what)
        if tensor is None:
            raise self.unsupported(f"{what} (input {index}) is missing")
        return tensor

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute ``name`` as a Python value (ints, floats, strings, lists, tensors)."""
        proto = self._attrs.get(name)
        if proto is None:
            return default
        value = onnx.helper.get_attribute_value(proto)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, onnx.TensorProto):
            return torch.from_numpy(numpy_helper.to_array(value).copy())
        if isinstance(value, list):
            return [v.decode() if isinstance(v, bytes) else v for v in value]
        return value

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"ONNX node {self.node.name or '(unnamed)'!r} ({self.op_type}): {reason}")

    def module_name(self) -> str:
        """A module name from the node name: '/layer1/conv1/Conv' → 'layer1_conv1'."""
        parts = [p for p in self.node.name.split("/") if p]
        if len(parts) > 1 and parts[-1].split("_")[0] == self.op_type:
            parts = parts[:-1]
        return self.builder.unique_name("_".join(parts) or self.op_type.lower())

    # ---- building the graph
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Value:
        """``fn(*args, **kwargs)``: folded to a Static value when no argument is dynamic, else a graph node."""
        if not _has_dynamic(args) and not _has_dynamic(kwargs):
            result = fn(*_on_probe(args, 0), **_on_probe(kwargs, 0))
            return self.folded(result)
        node = self.builder.graph.call_function(
            fn, self.builder.to_graph_arg(args), self.builder.to_graph_arg(kwargs)
        )
        probes = tuple(fn(*_on_probe(args, i), **_on_probe(kwargs, i)) for i in range(2))
        return Dynamic(node, probes)

    def folded(self, result: Any) -> Static:
        tensor = result if isinstance(result, torch.Tensor) else torch.tensor(result)
        if tensor.numel() > MAX_FOLDED_ELEMENTS:
            raise ModelLoadError(
                f"ONNX node {self.node.name!r} ({self.op_type}) folds to {tensor.numel()} elements; "
                f"the limit is {MAX_FOLDED_ELEMENTS}"
            )
        return Static(tensor)

    def module(
        self, module: nn.Module, *args: Value, name: str | None = None, params: dict[str, int] | None = None
    ) -> Dynamic:
        """Add ``module`` as a submodule (named after the ONNX node) and call it on ``args``.

        ``params`` maps a parameter of ``module`` to the node input it holds unchanged (up to a
        transpose), e.g. ``{"weight": 1, "bias": 2}`` for Conv: export names the parameter after
        that input, the user's initializer (meta ``onnx_params`` of the graph node).
        """
        module.eval()
        target = name or self.module_name()
        self.builder.root.add_module(target, module)
        node = self.builder.graph.call_module(target, self.builder.to_graph_arg(args))
        inputs = list(self.node.input)
        names = {p: inputs[i] for p, i in (params or {}).items() if i < len(inputs) and inputs[i]}
        if names:
            node.meta[ONNX_PARAMS] = names
        with torch.no_grad():
            probes = tuple(module(*_on_probe(args, i)) for i in range(2))
        return Dynamic(node, probes)
