"""Encodings in front of grid-preserving ops, where aimet-onnx places their quantizers.

A Pad (zeros), MaxPool, Reshape... outputs values on its input's grid, so aimet-onnx gives it no
output quantizer: the tensor entering it is quantized instead (a model input in front of a Pad is
quantized at the input). lowbit looks through such ops and quantizes the tensor where the next layer
reads it, past the op. The two are the same arithmetic; only the name in the file differs, and
aimet-onnx's strict loader of 0.6.1/1.0.0 files (2.0.0 moves such entries itself) rejects the
lowbit name. So the writer moves an activation encoding back through grid-preserving producers while
the tensor in front has no encoding and no other reader, and the loader follows the same path back.
"""

from __future__ import annotations

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


class GridGraph:
    """Producers and reader counts of an ONNX graph, to walk back through grid-preserving ops."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, int] = {}
        for node in graph.node:
            if node.op_type in _SHAPE_READERS:
                continue  # reads the dimensions only: a quantizer in front changes nothing it sees
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        self.outputs = {o.name for o in graph.output}

    def upstream(self, tensor: str) -> str | None:
        """The data input of ``tensor``'s producer when that producer is grid-preserving, has one
        output, and the input feeds nothing else (the quantizer there would serve only this path)."""
        node = self.producer.get(tensor)
        if node is None or node.op_type not in GRID_PRESERVING_OPS or node.domain not in ("", "ai.onnx"):
            return None
        if len(node.output) != 1 or not node.input or not node.input[0]:
            return None
        source = node.input[0]
        if self.readers.get(source, 0) != 1 or source in self.outputs:
            return None
        return source


def move_to_sources(doc: EncodingsDoc, model: onnx.ModelProto) -> dict[str, str]:
    """Move activation records in front of grid-preserving producers; ``{old name: new name}``."""
    graph = GridGraph(model.graph)
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
