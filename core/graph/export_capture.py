"""Capture with ``torch.export`` and rebuild the ATen graph as calls of leaf modules.

Why this route: ``torch.export`` (non-strict) traces what ``torch.fx.symbolic_trace`` cannot — shape-based
control flow, iteration over tensors, HuggingFace models (AIMET's fx-based preparer fails on MiniLM's BERT
embeddings slice) — and records for every ATen node the stack of modules that ran it (``nn_module_stack``)
plus output dtypes/shapes. The training-IR graph keeps ``aten.conv2d``, ``aten.linear``, ``aten.batch_norm``,
``aten.layer_norm``... undecomposed, so one ATen node is one layer. Each compute node is turned into one leaf
module (``core.graph.aten_layers`` / ``core.graph.aten_math``), named from the module stack; data movement
stays as ATen ``call_function`` nodes. A ``.pt2`` program has no Python module at all, which this route
needs none of: layers are rebuilt from the ATen arguments and the program's tensors, named by their FQNs.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx, nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from core.errors import UnsupportedOpError
from core.graph import aten_layers, aten_math  # noqa: F401  (registers the converters)
from core.graph.aten_registry import (
    Conversion,
    converter_for,
    inplace_is_safe,
    is_data_movement,
    is_inplace,
    output_is_float,
)
from core.graph.module_tree import ModuleTree, is_registered_layer, stack_owner
from core.graph.symbolic_shapes import emit_symbolic

FIRST_OF_TUPLE = "lowbit_first_of_tuple"


def export_program(model: nn.Module, example_inputs: tuple[Any, ...]) -> ExportedProgram:
    """``torch.export.export`` (non-strict) of ``model`` in eval mode; the model's train/eval flags are restored."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return torch.export.export(model, tuple(example_inputs), strict=False)
    finally:
        for module, training in flags:
            module.training = training


class _Context:
    """Private copies of the program's tensors, keyed by FQN, shared by every use."""

    def __init__(self, program: ExportedProgram) -> None:
        self._program = program
        self._fqn: dict[str, tuple[str, InputKind]] = {}
        self._transient: set[str] = set()  # non-persistent buffers and lifted constants: not in state_dict
        for spec in program.graph_signature.input_specs:
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self._fqn[spec.arg.name] = (str(spec.target), spec.kind)
                if spec.kind is InputKind.CONSTANT_TENSOR or spec.persistent is False:
                    self._transient.add(str(spec.target))
        self._copies: dict[str, torch.Tensor] = {}

    def fqn_of(self, node: Any) -> str | None:
        if isinstance(node, fx.Node) and node.op == "placeholder" and node.name in self._fqn:
            return self._fqn[node.name][0]
        return None

    def persistent(self, fqn: str) -> bool:
        return fqn not in self._transient

    def tensor_of(self, node: Any) -> torch.Tensor | None:
        fqn = self.fqn_of(node)
        if fqn is None:
            return None
        if fqn not in self._copies:
            kind = self._fqn[node.name][1]
            source = self._program.state_dict.get(fqn)
            if source is None:
                source = self._program.constants[fqn]
            copy = source.detach().clone()
            if kind is InputKind.PARAMETER:
                copy = nn.Parameter(copy, requires_grad=source.requires_grad)
            self._copies[fqn] = copy
        return self._copies[fqn]


def _module_name(node: fx.Node, conversion: Conversion, ctx: _Context) -> str:
    path, cls_path = stack_owner(node.meta)
    if path and is_registered_layer(cls_path):
        return path  # the node is the body of a torch layer: it keeps the layer's name
    # A layer rebuilt from a program weight is named after the weight's owner (``c_attn.weight`` ->
    # ``c_attn``), whether the module reads the weight as an argument or holds it (GPT-2's Conv1D).
    for item in (*conversion.args, *node.args):
        fqn = ctx.fqn_of(item)
        if fqn and fqn.endswith(".weight") and isinstance(ctx.tensor_of(item), nn.Parameter):
            return fqn[: -len(".weight")]
    return f"{path}.{conversion.name}" if path else conversion.name


def _forward_arg_names(model: nn.Module | None, count: int) -> list[str]:
    if model is not None:
        params = list(inspect.signature(model.forward).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(names) >= count:
            return names[:count]
    return [f"arg_{i}" for i in range(count)]


def rebuild(program: ExportedProgram, model: nn.Module | None = None) -> fx.GraphModule:
    """Turn an exported program into a GraphModule of leaf-module calls (see module docstring)."""
    signature = program.graph_signature
    if any(spec.kind != OutputKind.USER_OUTPUT for spec in signature.output_specs):
        raise UnsupportedOpError(
            "the model updates a buffer or input in forward (e.g. BatchNorm statistics in train mode); "
            "only inference graphs can be prepared: call model.eval() and remove in-place updates"
        )
    ctx, tree, graph = _Context(program), ModuleTree(), fx.Graph()
    env: dict[fx.Node, Any] = {}
    loose: dict[str, fx.Node] = {}

    def value(item: Any) -> Any:
        if not isinstance(item, fx.Node):
            return item
        if item in env:
            return env[item]
        fqn = ctx.fqn_of(item)
        if fqn is None:
            raise UnsupportedOpError(f"node {item.name} ({item.op}) cannot be rebuilt")
        if fqn not in loose:  # a program tensor used by plain ATen math: a get_attr of its own
            target = tree.add_tensor(fqn, ctx.tensor_of(item), ctx.persistent(fqn))  # type: ignore[arg-type]
            loose[fqn] = graph.get_attr(target)
            loose[fqn].meta.update(item.meta)
        return loose[fqn]

    def remap(args: Any) -> Any:
        return fx.node.map_aggregate(args, value)

    for node in program.graph.nodes:
        if node.op == "placeholder":
            if ctx.fqn_of(node) is None:
                env[node] = graph.placeholder(node.name)
                env[node].meta.update(node.meta)
            continue
        if node.op == "output":
            graph.output(remap(node.args[0]))
            continue
        if node.op == "get_attr":  # submodules of higher-order ops (torch.cond branches)
            target = tree.add_module(node.target, getattr(program.graph_module, node.target))
            env[node] = graph.get_attr(target)
            continue
        new = _convert_node(node, ctx, tree, graph, remap)
        new.meta.update(node.meta)
        env[node] = new

    _set_calling_convention(graph, program, model)
    prepared = fx.GraphModule(tree.root, graph, class_name="PreparedModel")
    prepared.meta["lowbit_capture"] = "torch.export"
    for fqn, node in loose.items():  # GraphModule re-registers buffers as persistent: restore the original's
        if not ctx.persistent(fqn):
            owner, _, field = str(node.target).rpartition(".")
            prepared.get_submodule(owner)._non_persistent_buffers_set.add(field)
    return prepared.eval()


def _set_calling_convention(graph: fx.Graph, program: ExportedProgram, model: nn.Module | None) -> None:
    """Make forward take and return what the original did.

    Positional tensors in and a tensor or a tuple of tensors out need no pytree code (no per-call cost);
    anything else (dicts, dataclass outputs) gets the program's pytree specs.
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names = _forward_arg_names(model, len(placeholders))
    in_spec, out_spec = program.call_spec.in_spec, program.call_spec.out_spec
    flat_args = pytree.tree_structure((tuple(range(len(placeholders))), {}))
    output = next(n for n in graph.nodes if n.op == "output")
    results = list(output.args[0])
    if in_spec == flat_args and out_spec in (pytree.tree_structure(0), pytree.tree_structure(tuple(results))):
        for node, name in zip(placeholders, names, strict=True):
            node.target = name
        if out_spec == pytree.tree_structure(0):
            output.args = (results[0],)
        else:
            output.args = (tuple(results),)
    elif in_spec is not None:
        graph._codegen = _PyTreeCodeGen(_PyTreeInfo(names, in_spec, out_spec))


def _convert_node(node: fx.Node, ctx: _Context, tree: ModuleTree, graph: fx.Graph, remap: Any) -> fx.Node:
    if node.target is operator.getitem and node.args[1] == 0:
        source = remap(node.args[0])
        if isinstance(source, fx.Node) and source.meta.get(FIRST_OF_TUPLE):
            return source  # the module already returns element 0 (Conversion.first_of_tuple)
    converter = None if is_data_movement(node.target) else converter_for(node.target)
    if converter is not None and is_inplace(node.target) and not inplace_is_safe(node):
        converter = None
    conversion = converter(node, ctx) if converter is not None and output_is_float(node) else None
    if conversion is None:
        symbolic = emit_symbolic(node, graph, remap)
        if symbolic is not None:
            return symbolic
        target: Any = node.target
        return graph.call_function(target, remap(node.args), remap(node.kwargs))
    name = tree.add_module(_module_name(node, conversion, ctx), conversion.module)
    new = graph.call_module(name, remap(conversion.args))
    new.meta["lowbit_source"] = str(node.target)
    if conversion.first_of_tuple:
        new.meta[FIRST_OF_TUPLE] = True
    return new
