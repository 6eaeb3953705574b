"""``prepare_model``: capture a model as a graph whose quantizable computations are leaf-module calls."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import fx, nn
from torch.export import ExportedProgram

from core.errors import GraphCaptureError, LowbitError
from core.graph.export_capture import export_program, rebuild
from core.graph.fx_capture import capture_with_fx

PreparedModel = fx.GraphModule
"""A ``torch.fx.GraphModule`` (class name ``PreparedModel``) built by :func:`prepare_model`."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    summary = f"{type(error).__name__}: {text[0] if text else ''}"
    # point at the user's code: the last frame the message names outside torch itself
    frames = [
        (path, line)
        for path, line in re.findall(r'File "([^"]+)", line (\d+)', str(error))
        if "/torch/" not in path
    ]
    if not frames:
        return summary
    path, line = frames[-1]
    return f"{summary} (at {path.rsplit('/', 1)[-1]}:{line})"


def prepare_model(model: nn.Module | ExportedProgram, example_inputs: tuple[Any, ...]) -> PreparedModel:
    """Capture ``model`` as a GraphModule in which every quantizable computation is a leaf-module call.

    Contract of the result:

    * layers keep their original names (``layer1.0.conv1``, weight ``layer1.0.conv1.weight``); functional
      math becomes ``core.graph.ops`` / torch activation modules named after the enclosing module
      (``layer1.0.add``, ``layer1.0.add_1``); every leaf maps to an ONNX type via
      ``core.graph.op_types.onnx_op_type``;
    * a module called from several places is duplicated (``relu``, ``relu_1``), sharing parameters;
    * data movement (view, permute, getitem, slice, ...) and math on non-float tensors stay
      ``call_function`` / ``call_method`` nodes;
    * outputs equal the original's; tensors are private copies (editing the result never edits ``model``);
      the result is in eval mode.

    ``torch.export`` (non-strict) is tried first; on failure ``torch.fx`` tracing; a GraphModule input goes
    to fx first (its leaves are already what we want). An ``ExportedProgram`` (from a ``.pt2``) is rebuilt
    directly. Raises GraphCaptureError naming both tracers' failures when nothing can trace the model.

    Example::

        prepared = prepare_model(model, (torch.randn(1, 3, 32, 32),))
        [n.target for n in prepared.graph.nodes if n.op == "call_module"]  # ['conv1', 'bn1', 'relu', ...]
    """
    if not isinstance(example_inputs, tuple):
        raise TypeError(
            f"example_inputs must be a tuple of model inputs, got {type(example_inputs).__name__}"
        )
    if isinstance(model, ExportedProgram):
        return _without_dead_code(rebuild(model))
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module or torch.export.ExportedProgram, got {type(model).__name__}"
        )
    routes = [("torch.fx", _via_fx), ("torch.export", _via_export)]
    # An ATen-level GraphModule (``ExportedProgram.module()`` of a .pt2) has no leaf modules for
    # fx to keep: it must be re-exported so its ATen ops are rebuilt into modules.
    if not isinstance(model, fx.GraphModule) or _has_aten_ops(model):
        routes.reverse()
    failures: list[str] = []
    for name, route in routes:
        try:
            return _without_dead_code(route(model, example_inputs))
        except LowbitError as error:
            failures.append(f"{name}: {error}")
        except Exception as error:  # tracers raise many unrelated types; all mean "this route failed"
            failures.append(f"{name}: {_first_line(error)}")
    raise GraphCaptureError(
        f"cannot capture {type(model).__name__} as a graph. " + "; ".join(failures) + ". "
        "Run core.graph.validate_model for per-node advice (data-dependent control flow: rewrite with "
        "torch.cond or move it into a leaf module)."
    )


def _without_dead_code(gm: PreparedModel) -> PreparedModel:
    """Drop computations whose results are never used (e.g. BERT's pooler under a mean-pooling head).

    They would get quantizers that calibrate on nothing and have no tensor in the exported ONNX.
    """
    if gm.graph.eliminate_dead_code():
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


def _has_aten_ops(gm: fx.GraphModule) -> bool:
    return any(
        n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in gm.graph.nodes
    )


def _via_export(model: nn.Module, example_inputs: tuple[Any, ...]) -> PreparedModel:
    return rebuild(export_program(model, example_inputs), model)


def _via_fx(model: nn.Module, example_inputs: tuple[Any, ...]) -> PreparedModel:
    with torch.no_grad():
        return capture_with_fx(model, example_inputs)
