"""FP32 ONNX export with the TorchScript exporter, and the map from module boundaries to ONNX tensors.

``torch.onnx.export(..., dynamo=False)`` produces AIMET's naming (``/conv1/Conv_output_0``,
initializers named like the parameters, ``conv1.weight``). Two of its habits are undone here:

- identical parameters are de-duplicated into one initializer plus ``Identity`` nodes; each
  parameter gets its own initializer back, so every parameter encoding names a real tensor;
- the boundary markers (core/export/markers.py) are read and removed, leaving a plain graph and
  the exact tensor behind every module input and output.

BatchNorm stays a separate node (no constant folding; the exporter only fuses Conv+BN when
folding constants in eval mode).
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from core.errors import LowbitError
from core.export.markers import MARKER_DOMAIN, MARKER_OP, boundary_markers, parse_tag

DEFAULT_OPSET = 17
Boundary = tuple[str, str, int]  # (module name, "in" | "out", positional index)


@dataclass
class MarkedExport:
    """The exported FP32 ONNX model and what the markers said.

    ``boundaries`` maps (module, "in"/"out", index) to the ONNX tensor name; ``consumers`` maps
    an input boundary to the ONNX nodes (by name) that read it inside that module, which is
    where a module's own input quantizer acts. ``warnings`` lists modules the markers saw twice.
    """

    model: onnx.ModelProto
    boundaries: dict[Boundary, str]
    consumers: dict[Boundary, tuple[str, ...]]
    warnings: list[str] = field(default_factory=list)


def export_marked_onnx(
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    module_names: Sequence[str],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_dims: Mapping[str, Mapping[int, str]] | None = None,
) -> MarkedExport:
    """Export ``model`` (eval mode, as is) and locate the boundary tensors of ``module_names``.

    ``dynamic_dims`` (input/output name -> {axis: dimension name}, the user's file's open dimensions)
    makes exactly those dimensions symbolic; without it, ``dynamic_batch`` makes dimension 0 of every
    input and output symbolic (``batch``).
    """
    # torch's exporter refuses graph I/O names it uses for its own values (numeric ones such as
    # '272', common in ONNX files from other exporters): export under stand-ins, rename afterwards.
    wanted = [*input_names, *output_names]
    stand_ins = {n: f"lowbit_io_{i}" if n.isdigit() else n for i, n in enumerate(wanted)}
    input_names = [stand_ins[n] for n in input_names]
    output_names = [stand_ins[n] for n in output_names]
    dynamic_axes: dict[str, dict[int, str]] | None = None
    if dynamic_dims is not None:
        dynamic_axes = {
            stand_ins[n]: dict(axes) for n, axes in dynamic_dims.items() if n in stand_ins and axes
        }
    elif dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in [*input_names, *output_names]}
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        # No torch.no_grad() here: under it the tracer inlines autograd Functions and the markers vanish.
        with boundary_markers(model, list(module_names)):
            torch.onnx.export(
                model,
                tuple(example_inputs),
                buffer,  # type: ignore[arg-type]  # file-like objects are accepted
                dynamo=False,
                opset_version=opset,
                training=torch.onnx.TrainingMode.PRESERVE,
                do_constant_folding=False,
                input_names=list(input_names),
                output_names=list(output_names),
                custom_opsets={MARKER_DOMAIN: 1},
                dynamic_axes=dynamic_axes,
            )
    except Exception as exc:  # the exporter raises many types; report them as one engine error
        raise LowbitError(f"ONNX export of the model failed: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    _declare_output_shapes(proto, model, example_inputs, dynamic_axes or {})
    _rename_io(proto, {v: k for k, v in stand_ins.items() if k != v})
    _restore_deduplicated_params(proto, {name for name, _ in model.state_dict().items()})
    return _strip_markers(proto)


def _declare_output_shapes(
    proto: onnx.ModelProto,
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> None:
    """Declare each graph output's shape: its dynamic axes by name, the others at the example's size.

    The exporter's shape inference stops at the boundary markers, leaving outputs with made-up
    dimension names (``Markerhidden_dim_2``) where the size is in fact fixed.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(*example_inputs)
    finally:
        model.train(was_training)
    results = result if isinstance(result, tuple | list) else (result,)
    for output, value in zip(proto.graph.output, results, strict=False):
        dims = output.type.tensor_type.shape.dim
        if not isinstance(value, torch.Tensor) or len(dims) != value.dim():
            continue
        axes = dynamic_axes.get(output.name, {})
        for axis, dim in enumerate(dims):
            if axis in axes:
                dim.dim_param = axes[axis]
            else:
                dim.dim_value = int(value.shape[axis])


def _rename_io(proto: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename graph I/O tensors; an internal tensor already holding a wanted name moves aside first."""
    if not renames:
        return
    graph = proto.graph
    taken = {o for node in graph.node for o in node.output} | {t.name for t in graph.initializer}
    moves = {want: f"{want}_lowbit_internal" for want in renames.values() if want in taken}
    moves.update(renames)

    def fix(name: str) -> str:
        return moves.get(name, name)

    for node in graph.node:
        node.input[:] = [fix(n) for n in node.input]
        node.output[:] = [fix(n) for n in node.output]
    for item in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        item.name = fix(item.name)


def _restore_deduplicated_params(proto: onnx.ModelProto, param_names: set[str]) -> None:
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and node.input[0] in inits
            and node.output[0] in param_names
            and node.output[0] not in inits
        ):
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            graph.initializer.append(copy)
            inits[copy.name] = copy
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _strip_markers(proto: onnx.ModelProto) -> MarkedExport:
    graph = proto.graph
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    markers = [n for n in graph.node if n.domain == MARKER_DOMAIN and n.op_type == MARKER_OP]
    alias = {m.output[0]: m.input[0] for m in markers}

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def real_consumers(name: str) -> list[str]:
        out: list[str] = []
        for node in readers.get(name, []):
            if node.domain == MARKER_DOMAIN and node.op_type == MARKER_OP:
                out.extend(real_consumers(node.output[0]))
            else:
                out.append(node.name)
        return out

    raw: dict[Boundary, str] = {}
    consumers: dict[Boundary, tuple[str, ...]] = {}
    warnings: list[str] = []
    for marker in markers:
        tag = next(a.s.decode() for a in marker.attribute if a.name == "tag")
        key = parse_tag(tag)
        if key in raw:
            warnings.append(f"module {key[0]!r} runs more than once; its quantizers map to its first call")
            continue
        raw[key] = marker.input[0]
        if key[1] == "in":
            consumers[key] = tuple(dict.fromkeys(real_consumers(marker.output[0])))

    # Rewire the real nodes past the markers, then give graph outputs their declared names back.
    kept = [n for n in graph.node if not (n.domain == MARKER_DOMAIN and n.op_type == MARKER_OP)]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    graph_inputs = {i.name for i in graph.input}
    rename: dict[str, str] = {}
    extra: list[onnx.NodeProto] = []
    for out in graph.output:
        source = resolve(out.name)
        if source == out.name:
            continue
        if source in graph_inputs or source in rename:
            extra.append(
                helper.make_node("Identity", [source], [out.name], name=f"/output_identity/{out.name}")
            )
        else:
            rename[source] = out.name
    for node in kept:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    del graph.node[:]
    graph.node.extend(kept + extra)
    value_info = [v for v in graph.value_info if v.name not in alias]
    for v in value_info:
        v.name = rename.get(v.name, v.name)
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    opsets = [o for o in proto.opset_import if o.domain != MARKER_DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)

    boundaries = {key: rename.get(resolve(t), resolve(t)) for key, t in raw.items()}
    return MarkedExport(proto, boundaries, consumers, warnings)
