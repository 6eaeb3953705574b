"""``.pt2`` models: torch.export programs, loaded only after the archive passes core.io.pt2_archive.

After loading, every graph node is checked too: a program may only call ATen/prims operators,
higher-order operators, and plain arithmetic — a crafted graph could otherwise name any
function reachable from ``torch``/``operator``/``math`` and run it at forward time.
"""

from __future__ import annotations

import contextlib
import math
import operator
from pathlib import Path
from typing import Any

import torch

from core.errors import ModelLoadError
from core.io.example_shapes import DataShapes, example_shape
from core.io.limits import MAX_MODEL_BYTES, check_probe_shape, checked_file
from core.io.loaded_model import LoadedModel
from core.io.models import register_format
from core.io.pt2_archive import check_pt2_archive

_SAFE_OPERATOR = {
    getattr(operator, name)
    for name in (
        "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
        "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "getitem",
    )
}  # fmt: skip
_SAFE_MATH = {getattr(math, name) for name in ("floor", "ceil", "trunc", "sqrt", "isfinite", "log2")}
_SAFE_TORCH = {
    getattr(torch, name)
    for name in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "sym_sum")
    if hasattr(torch, name)
} | {torch._check, torch._check_is_size}
_OP_TYPES = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)


def _check_graph(program: torch.export.ExportedProgram, path: Path) -> None:
    for graph_module in program.graph_module.modules():
        graph = getattr(graph_module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            if node.op in ("placeholder", "output", "get_attr"):
                continue
            target = node.target
            safe = node.op == "call_function" and (
                isinstance(target, _OP_TYPES) or target in _SAFE_OPERATOR | _SAFE_MATH | _SAFE_TORCH
            )
            if not safe:
                raise ModelLoadError(
                    f"model file {str(path)!r}: node {node.name!r} calls {target!r} ({node.op}); "
                    "accepted: ATen/prims operators and plain arithmetic"
                )


def load_exported_program(path: Path) -> torch.export.ExportedProgram:
    """Check and load a ``.pt2`` archive; returns the ExportedProgram named ``model`` in it."""
    path = checked_file(
        path, kind="model", suffixes=(".pt2",), max_bytes=MAX_MODEL_BYTES, error=ModelLoadError
    )
    check_pt2_archive(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises many types for a corrupt archive; report one clear error
        raise ModelLoadError(
            f"model file {str(path)!r}: torch.export.load failed ({type(exc).__name__}: {exc}); "
            f"accepted: archives written by torch.export.save with torch {torch.__version__.split('+')[0]}"
        ) from exc
    _check_graph(program, path)
    # Guards are inert data here (see core.io.pt2_archive): nothing may later turn them into code.
    program._guards_code = []
    return program


def _input_values(program: torch.export.ExportedProgram) -> list[tuple[str, torch.Tensor]]:
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    values = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"program input {name!r} is not a tensor; only tensor inputs are supported")
        values.append((name, value))
    return values


def _saved_examples(program: torch.export.ExportedProgram, values: list[tuple[str, torch.Tensor]]) -> Any:
    """The sample inputs torch.export.save stored (checked by core.io.pt2_archive), if they fit the inputs."""
    saved = program.example_inputs
    if not saved or saved[1] or len(saved[0]) != len(values):
        return None
    for tensor, (_, value) in zip(saved[0], values, strict=True):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != value.dtype or tensor.dim() != value.dim():
            return None
        for size, dim in zip(tensor.shape, value.shape, strict=True):
            if isinstance(dim, int) and size != dim:
                return None
    return tuple(t.detach().clone() for t in saved[0])


def _example_inputs(
    program: torch.export.ExportedProgram, data: DataShapes | None = None
) -> tuple[list[str], tuple[torch.Tensor, ...], tuple[tuple[int, ...], ...]]:
    """(input names, example tensors, dynamic axes per input).

    The examples are the sample inputs saved in the file when they fit the program's inputs, else
    zeros shaped as core.io.example_shapes says: fixed dimensions checked against the calibration
    arrays ``data`` first, symbolic (dynamic) dimensions at their lower bound (at least 1).
    """
    values = _input_values(program)
    names = [name for name, _ in values]
    dynamic = tuple(
        tuple(axis for axis, dim in enumerate(value.shape) if not isinstance(dim, int)) for _, value in values
    )
    saved = _saved_examples(program, values)
    if saved is not None:
        for name, tensor in zip(names, saved, strict=True):
            check_probe_shape(list(tensor.shape), what=f"program input {name!r}", error=ModelLoadError)
        return names, saved, dynamic
    arrays = data.for_inputs(names) if data is not None else [None] * len(values)
    tensors = []
    for (name, value), array in zip(values, arrays, strict=True):
        declared: list[int | None] = []
        lowest = []
        for dim in value.shape:
            declared.append(dim if isinstance(dim, int) else None)
            bound = None if isinstance(dim, int) else program.range_constraints.get(dim.node.expr)
            lower = int(bound.lower) if bound is not None and math.isfinite(bound.lower) else 1
            lowest.append(max(1, lower))
        # A program's fixed sizes are baked into its graph: none may be probed as dynamic.
        shape = example_shape(declared, lowest, array, what=f"program input {name!r}", shapes_may_vary=False)
        tensors.append(torch.zeros(shape, dtype=value.dtype))
    return names, tuple(tensors), dynamic


def _dim_names(shape: Any, stem: str) -> dict[int, str]:
    """{axis: name} of the symbolic dimensions of ``shape``: the symbol (``s43``) when the size is one,
    ``<stem>_dim<axis>`` when it is an expression of several (a strided conv's output length)."""
    names: dict[int, str] = {}
    for axis, dim in enumerate(shape):
        if isinstance(dim, torch.SymInt):
            expr = dim.node.expr
            names[axis] = str(expr) if getattr(expr, "is_Symbol", False) else f"{stem}_dim{axis}"
    return names


def _dynamic_dims(program: torch.export.ExportedProgram, names: list[str]) -> dict[str, dict[int, str]]:
    """Input and output name -> {axis: dimension name} for every symbolic dimension of the program."""
    values = dict(_input_values(program))
    dims = {name: _dim_names(values[name].shape, name) for name in names}
    (output,) = (node for node in program.graph.nodes if node.op == "output")
    results = output.args[0] if isinstance(output.args[0], tuple | list) else (output.args[0],)
    by_name = {node.name: node for node in results if isinstance(node, torch.fx.Node)}
    for name in program.graph_signature.user_outputs:
        node = by_name.get(str(name))
        value = node.meta.get("val") if node is not None else None
        if isinstance(value, torch.Tensor):
            dims[str(name)] = _dim_names(value.shape, str(name))
    return {name: axes for name, axes in dims.items() if axes}


def load_pt2(path: Path, data: DataShapes | None = None) -> LoadedModel:
    """Load a ``.pt2`` file as a LoadedModel whose module is ``ExportedProgram.module()``; ``data``
    (the calibration file's array shapes) shapes example inputs the file does not hold.

    The module is built without torch's ``_guards_fn`` (its guards are Python source from the file);
    input shapes are checked from the program's symbolic shapes instead (``dynamic_axes``).
    """
    program = load_exported_program(path)
    names, examples, dynamic = _example_inputs(program, data)
    module = program.module(check_guards=False)
    # torch 2.13's exported modules refuse .eval(); the graph already holds the behaviour (BN,
    # dropout) of the mode the model was exported in.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        module.eval()
    outputs = [str(name) for name in program.graph_signature.user_outputs]
    return LoadedModel(
        module,
        examples,
        names,
        outputs,
        "pt2",
        Path(path),
        program=program,
        dynamic_axes=dynamic,
        dynamic_dims=_dynamic_dims(program, names),
    )


register_format("pt2", (".pt2",), load_pt2)
