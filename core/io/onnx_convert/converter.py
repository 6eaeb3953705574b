"""ONNX graph → torch.fx GraphModule.

Layers with weights become modules named after their ONNX nodes; everything else becomes
call_function nodes of torch functions. Parts of the graph that depend only on constants (shape
arithmetic, Constant nodes) are evaluated while converting and stored as buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx

from core.errors import ModelLoadError, UnsupportedOpError
from core.io.example_shapes import ArrayShape, DataShapes, example_shape
from core.io.onnx_convert.context import ONNX_TENSOR, GraphBuilder, NodeContext
from core.io.onnx_convert.fusions import fuse_activations
from core.io.onnx_convert.registry import HANDLERS, supported_ops
from core.io.onnx_convert.values import PROBE_SIZES, Dynamic, Static, Value

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class ConvertedGraph:
    """The converted module (eval mode), ONNX input/output names, one example tensor per input
    (open dimensions are 2), and per input the axes probed as open (sizes vary there)."""

    module: fx.GraphModule
    input_names: list[str]
    output_names: list[str]
    example_inputs: tuple[torch.Tensor, ...]
    open_axes: tuple[tuple[int, ...], ...] = ()


def _torch_dtype(elem_type: int, what: str) -> torch.dtype:
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
        return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype
    except (KeyError, TypeError, ValueError) as exc:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "undefined"
        raise ModelLoadError(f"{what} has element type {name}; accepted: numeric tensors") from exc


def _to_tensor(proto: onnx.TensorProto) -> torch.Tensor:
    array = numpy_helper.to_array(proto)
    if array.dtype.kind not in "biuf":
        raise ModelLoadError(f"initializer {proto.name!r} has dtype {array.dtype}; accepted: numeric tensors")
    return torch.from_numpy(np.array(array, copy=True))


def _input_probes(value_info: onnx.ValueInfoProto, data: ArrayShape | None) -> tuple[torch.Tensor, ...]:
    """One tensor per probe size, shaped by the calibration array ``data`` where known
    (core.io.example_shapes: the declaration alone never sizes them)."""
    tensor_type = value_info.type.tensor_type
    what = f"model input {value_info.name!r}"
    dtype = _torch_dtype(tensor_type.elem_type, what)
    dims = None
    if tensor_type.HasField("shape"):
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor_type.shape.dim
        ]
    generator = torch.Generator().manual_seed(0)
    probes = []
    for index in range(len(PROBE_SIZES)):
        shape = example_shape(dims, _probe_sizes(dims, data, index), data, what=what, shapes_may_vary=True)
        if dtype.is_floating_point:
            probes.append(torch.randn(shape, generator=generator).to(dtype))
        else:
            probes.append(torch.zeros(shape, dtype=dtype))
    return tuple(probes)


def _probe_sizes(dims: list[int | None] | None, data: ArrayShape | None, index: int) -> int | list[int]:
    """Sizes of open dimensions in probe ``index``: PROBE_SIZES for the batch, and for the other axes half
    the calibration data's length, then its length. A length of 1 or 2 would not fit a convolution
    front end (Wav2Vec2's raw samples), and lengths apart by one would give strided layers the same
    output size, so the converter would take a size that depends on the length for a constant."""
    size = PROBE_SIZES[index]
    if dims is None or data is None or len(data.shape) != len(dims):
        return size
    sizes = [size]
    for length in data.shape[1:]:
        sizes.append(max(1, length * (index + 1) // len(PROBE_SIZES)) if length > 2 else size)
    return sizes


def default_opset(model: onnx.ModelProto) -> int:
    """The model's ONNX (default domain) opset version."""
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    raise ModelLoadError("the model imports no default-domain ONNX opset")


def convert(model: onnx.ModelProto, data: DataShapes | None = None) -> ConvertedGraph:
    """Convert an ONNX model (external data already loaded) into a torch.fx GraphModule.

    ``data`` (the calibration file's array shapes) shapes the example inputs and probes. Raises
    UnsupportedOpError naming the op, the node and the supported op list for anything outside the
    supported set, ModelLoadError for a malformed graph, DataLoadError for data the inputs refuse. Activation patterns are
    fused in ``model`` itself first (core.io.onnx_convert.fusions).
    """
    opset = default_opset(model)
    fuse_activations(model)
    supported = supported_ops()
    builder = GraphBuilder()
    graph = model.graph
    env: dict[str, Value] = {}
    for init in graph.initializer:
        env[init.name] = Static(_to_tensor(init))
    # Initializers listed as inputs (keep_initializers_as_inputs) are not inputs.
    inputs = [value_info for value_info in graph.input if value_info.name not in env]
    arrays = data.for_inputs([v.name for v in inputs]) if data is not None else [None] * len(inputs)
    input_names: list[str] = []
    examples: list[torch.Tensor] = []
    open_axes: list[tuple[int, ...]] = []
    for value_info, array in zip(inputs, arrays, strict=True):
        probes = _input_probes(value_info, array)
        node = builder.graph.placeholder(builder.unique_name(value_info.name))
        env[value_info.name] = Dynamic(node, probes)
        input_names.append(value_info.name)
        # The example is the last probe (open dimensions = 2, every node ran on it): an export traced at
        # size 1 lets broadcasting hide a dimension that the traced graph then bakes in.
        examples.append(probes[-1])
        open_axes.append(tuple(a for a, size in enumerate(probes[0].shape) if size != probes[-1].shape[a]))
    with torch.no_grad():
        for onnx_node in graph.node:
            _convert_node(builder, onnx_node, env, opset, supported)
    outputs = []
    for out in graph.output:
        if out.name not in env:
            raise ModelLoadError(f"graph output {out.name!r} is produced by no node")
        outputs.append(builder.to_graph_arg(env[out.name]))
    builder.graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
    module = fx.GraphModule(builder.root, builder.graph, class_name="OnnxGraphModule")
    module.eval()
    outputs_names = [o.name for o in graph.output]
    return ConvertedGraph(module, input_names, outputs_names, tuple(examples), tuple(open_axes))


def _convert_node(
    builder: GraphBuilder, onnx_node: onnx.NodeProto, env: dict[str, Value], opset: int, supported: list[str]
) -> None:
    label = f"ONNX node {onnx_node.name or '(unnamed)'!r} ({onnx_node.op_type})"
    if onnx_node.domain not in _DEFAULT_DOMAINS or onnx_node.op_type not in HANDLERS:
        domain = f" in domain {onnx_node.domain!r}" if onnx_node.domain not in _DEFAULT_DOMAINS else ""
        raise UnsupportedOpError(
            f"{label}: operator {onnx_node.op_type!r}{domain} is not supported; "
            f"supported (default domain): {', '.join(supported)}"
        )
    inputs: list[Value | None] = []
    for name in onnx_node.input:
        if not name:
            inputs.append(None)
        elif name not in env:
            raise ModelLoadError(f"{label}: input {name!r} is produced by no earlier node")
        else:
            inputs.append(env[name])
    try:
        results = HANDLERS[onnx_node.op_type](NodeContext(builder, onnx_node, inputs, opset))
    except (UnsupportedOpError, ModelLoadError):
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"{label}: cannot be converted ({type(exc).__name__}: {exc})") from exc
    for name, value in zip(onnx_node.output, results, strict=False):
        if name and value is not None:
            env[name] = value
            if isinstance(value, Dynamic):
                # First writer wins: an Identity passes its input's node on under that node's name.
                value.node.meta.setdefault(ONNX_TENSOR, name)
