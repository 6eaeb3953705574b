"""Encodings in front of grid-preserving ops, where aimet-onnx places their quantizers.

A Pad (zeros), MaxPool, Reshape... outputs values on its input's grid, so aimet-onnx gives it no
output quantizer: the tensor entering it is quantized instead (a model input in front of a Pad is
quantized at the input). lowbit looks through such ops and quantizes the tensor where the next layer
reads it, past the op. The two are the same arithmetic; only the name in the file differs, and
aimet-onnx's strict loader of 0.6.1/1.0.0 files (2.0.0 moves such entries itself) rejects the
lowbit name. So the writer moves an activation encoding back through grid-preserving producers while
the tensor in front has no encoding and no other reader, and the loader follows the same path back.
A float-to-float Cast is walked through too: aimet-onnx's configs leave Cast outputs unquantized and
its loader delegates a Cast's encoding to the Cast's input (T5 casts its embedding lookup to the
weights' dtype before the first RMSNorm). Readers that take only a tensor's shape (Shape) do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import onnx

from core.export.records import EncodingRecord, EncodingsDoc

# aimet_onnx.common.onnx._utils._is_grid_preserving_op (default domain), 2.42.
GRID_PRESERVING_OPS = frozenset(
    {
        "Col2Im", "Compress", "DepthToSpace", "Dropout", "Expand", "Flatten", "Gather", "GatherElements",
        "GatherND", "Identity", "MaxPool", "MaxRoiPool", "NonZero", "Pad", "ReduceMax", "ReduceMin",
        "Reshape", "Slice", "SpaceToDepth", "Split", "SplitToSequence", "Squeeze", "Tile", "TopK",
        "Transpose", "Unsqueeze",
    }
)  # fmt: skip


# Ops that read only a tensor's dimensions (the TorchScript exporter's size arithmetic of MobileViT's
# unfolding reads the Resize output's Shape beside the Reshape that carries its values).
_SHAPE_READERS = frozenset({"Shape", "Size"})


_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
)


class GridGraph:
    """Producers and reader counts of an ONNX graph, to walk back through grid-preserving ops."""

    def __init__(self, graph: onnx.GraphProto, opset_import: Sequence[onnx.OperatorSetIdProto] = ()) -> None:
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, int] = {}
        for node in graph.node:
            if node.op_type in _SHAPE_READERS:
                continue  # reads the dimensions only: a quantizer in front changes nothing it sees
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        self.outputs = {o.name for o in graph.output}
        self._graph = graph
        self._opset = list(opset_import)
        self._float: dict[str, bool] | None = None

    def is_float(self, tensor: str) -> bool:
        """Whether ``tensor`` holds floats (ONNX shape inference, run once when a Cast is met)."""
        if self._float is None:
            model = onnx.helper.make_model(self._graph, opset_imports=self._opset or None)
            try:
                graph = onnx.shape_inference.infer_shapes(model).graph
            except onnx.shape_inference.InferenceError:  # uninferable: no Cast is walked through
                graph = self._graph
            infos = [*graph.value_info, *graph.input, *graph.output]
            self._float = {v.name: v.type.tensor_type.elem_type in _FLOAT_TYPES for v in infos}
            self._float.update({t.name: t.data_type in _FLOAT_TYPES for t in graph.initializer})
        return self._float.get(tensor, False)

    def _moves_data(self, node: onnx.NodeProto) -> bool:
        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            return to in _FLOAT_TYPES and bool(node.input) and self.is_float(node.input[0])
        return node.op_type in GRID_PRESERVING_OPS

    def upstream(self, tensor: str) -> str | None:
        """The data input of ``tensor``'s producer when that producer is grid-preserving, has one
        output, and the input feeds nothing else (the quantizer there would serve only this path)."""
        node = self.producer.get(tensor)
        if node is None or not self._moves_data(node):
            return None
        if len(node.output) != 1 or not node.input or not node.input[0]:
            return None
        source = node.input[0]
        if self.readers.get(source, 0) != 1 or source in self.outputs:
            return None
        return source


def move_to_sources(doc: EncodingsDoc, model: onnx.ModelProto) -> dict[str, str]:
    """Move activation records in front of grid-preserving producers; ``{old name: new name}``."""
    graph = GridGraph(model.graph, model.opset_import)
    moved: dict[str, str] = {}
    records: dict[str, EncodingRecord] = {}
    for name, record in doc.activations.items():
        target = name
        while (
            (source := graph.upstream(target)) is not None
            and doc.get(source) is None
            and source not in records
        ):
            target = source
        records[target] = record if target == name else replace(record, name=target)
        if target != name:
            moved[name] = target
    doc.activations.clear()
    doc.activations.update(records)
    return moved


def record_upstream(doc: EncodingsDoc, graph: GridGraph | None, tensor: str) -> EncodingRecord | None:
    """The record for ``tensor``, or for the tensor :func:`move_to_sources` would have moved it to."""
    record = doc.get(tensor)
    if record is not None or graph is None:
        return record
    while record is None and (source := graph.upstream(tensor)) is not None:
        tensor = source
        record = doc.get(tensor)
    return record
