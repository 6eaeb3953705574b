"""Fallback capture with ``torch.fx.symbolic_trace``; also the route for models that already are GraphModules.

Leaf modules (torch layers and every class with an ONNX op type) stay ``call_module`` nodes under their
original names; functional math found by ``core.graph.fx_functions`` becomes modules; a module called from
several places is duplicated (``relu``, ``relu_1``), the copies sharing their parameters. Output dtypes come
from one shape-propagation run on the example inputs, so integer math (index arithmetic) keeps no module.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from core.graph.aten_registry import inplace_is_safe
from core.graph.fx_functions import fx_converter_for
from core.graph.module_tree import ModuleTree, stack_owner
from core.graph.op_types import has_op_type


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return has_op_type(m) or super().is_leaf_module(m, module_qualified_name)


def trace_with_fx(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (eval mode) keeping registered layers as leaves; GraphModules are copied."""
    if isinstance(model, fx.GraphModule):
        return copy.deepcopy(model)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        graph = _LeafTracer().trace(model)
    finally:
        for module, training in flags:
            module.training = training
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _float_output(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    if meta is not None and hasattr(meta, "dtype"):
        return bool(meta.dtype.is_floating_point)
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _share_parameters(module: nn.Module) -> nn.Module:
    # a second call site needs its own module (its own output quantizer) but the same weights
    dup = copy.copy(module)
    dup._parameters = dict(module._parameters)
    dup._buffers = dict(module._buffers)
    dup._modules = dict(module._modules)
    return dup


def capture_with_fx(model: nn.Module, example_inputs: tuple[Any, ...]) -> fx.GraphModule:
    """Trace with fx and rebuild as leaf-module calls (see module docstring)."""
    traced = trace_with_fx(model)
    traced.eval()
    ShapeProp(traced).propagate(*example_inputs)
    tree, graph = ModuleTree(), fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    memo: dict[int, Any] = {}  # one deepcopy memo: tied weights stay tied in the copy
    placed: dict[str, nn.Module] = {}
    tensors: dict[str, str] = {}

    def remap(args: Any) -> Any:
        return fx.node.map_arg(args, lambda n: env[n])

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            new = graph.placeholder(
                node.target, default_value=node.args[0] if node.args else inspect.Signature.empty
            )
        elif node.op == "output":
            new = graph.output(remap(node.args[0]))
        elif node.op == "get_attr":
            if node.target not in tensors:
                value = copy.deepcopy(_fetch(traced, node.target), memo)
                if isinstance(value, torch.Tensor):
                    tensors[node.target] = tree.add_tensor(node.target, value)
                else:
                    tensors[node.target] = tree.add_module(node.target, value)
            new = graph.get_attr(tensors[node.target])
        elif node.op == "call_module":
            original = traced.get_submodule(node.target)
            module = placed.get(node.target)
            module = copy.deepcopy(original, memo) if module is None else _share_parameters(module)
            placed.setdefault(node.target, module)
            name = tree.add_module(node.target, module)
            new = graph.call_module(name, remap(node.args), remap(node.kwargs))
        else:
            converter = fx_converter_for(node)
            if node.kwargs.get("inplace") and not inplace_is_safe(node):
                converter = None  # the write into the input is visible later: keep the original call
            conversion = converter(node) if converter is not None and _float_output(node) else None
            if conversion is None:
                new = graph.create_node(node.op, node.target, remap(node.args), remap(node.kwargs), node.name)
            else:
                path, _ = stack_owner(node.meta)
                name = tree.add_module(
                    f"{path}.{conversion.name}" if path else conversion.name, conversion.module
                )
                new = graph.call_module(name, remap(conversion.args))
                new.meta["lowbit_source"] = str(node.target)
        new.meta.update({k: v for k, v in node.meta.items() if k not in new.meta})
        env[node] = new

    graph._codegen = copy.deepcopy(traced.graph._codegen)
    prepared = fx.GraphModule(tree.root, graph, class_name="PreparedModel")
    prepared.meta["lowbit_capture"] = "torch.fx"
    return prepared.eval()


def _fetch(module: nn.Module, dotted: str) -> Any:
    obj: Any = module
    for atom in dotted.split("."):
        obj = getattr(obj, atom)
    return obj
