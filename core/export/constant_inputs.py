"""Encodings for the constant bounds of Clip and the fill value of Pad, which AIMET quantizes as activations.

A ReLU6 exports as ``Clip(x, min, max)`` with ``min``/``max`` as Constant nodes or initializers.
aimet-onnx places an activation quantizer on every such input (they are not parameters of an op it
knows), so its strict loader expects an encoding for each. The target reads them as constants;
an encoding from the value itself (AIMET's min-max on a scalar: the grid spans [min(v, 0), max(v, 0)])
represents the bound exactly, so adding them changes nothing the model computes. A constant Pad's
fill value (``constant_value``, input 2) is such an input too; aimet-onnx quantizes it whether or not
the Pad's output is quantized (it is not: Pad is grid-preserving). The Pad's data is quantized when
its input carries an encoding, or a tensor it was reshaped/transposed from does (Swin pads the
normalized hidden state, reshaped to a grid, before its window partition).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from core.export.grid_preserving import GRID_PRESERVING_OPS
from core.export.records import EncodingRecord, EncodingsDoc
from core.quant.encoding import Encoding, QuantSpec


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the initializers and Constant nodes of a graph, by tensor name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def clip_bound_names(model: onnx.ModelProto | onnx.GraphProto) -> set[str]:
    """Names of the scalar constant min/max inputs of the Clips and the fill values of the Pads."""
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    constants = constant_values(graph)
    return {
        name
        for node in graph.node
        if node.op_type in ("Clip", "Pad")
        for name in (node.input[1:3] if node.op_type == "Clip" else node.input[2:3])
        if name and name in constants and constants[name].size == 1
    }


def add_clip_bound_encodings(doc: EncodingsDoc, model: onnx.ModelProto, bitwidth: int) -> list[str]:
    """Add an activation encoding for each constant bound of a quantized Clip; the names added."""
    if bitwidth > 16:
        return []
    constants = constant_values(model.graph)
    producers = {o: n for n in model.graph.node for o in n.output}
    added = []
    for node in model.graph.node:
        if node.op_type == "Clip" and node.output and node.output[0] in doc.activations:
            names = node.input[1:3]
        elif (
            node.op_type == "Pad"
            and len(node.input) > 2
            and (node.output[0] in doc.activations or _quantized_upstream(doc, producers, node.input[0]))
        ):
            names = node.input[2:3]
        else:
            continue
        for name in names:
            value = constants.get(name)
            if not name or value is None or value.size != 1 or value.dtype.kind != "f":
                continue
            if name in doc.activations or name in doc.params:
                continue
            v = torch.tensor([float(value.reshape(-1)[0])])
            enc = Encoding.from_min_max(
                v, v, bitwidth=bitwidth, symmetric=False, spec=QuantSpec(bitwidth=bitwidth)
            )
            doc.activations[name] = EncodingRecord.from_encoding(name, enc)
            added.append(name)
    return added


def _quantized_upstream(doc: EncodingsDoc, producers: dict[str, onnx.NodeProto], tensor: str) -> bool:
    """Whether ``tensor``, or the data input of a chain of grid-preserving ops producing it, has an encoding."""
    while tensor:
        if tensor in doc.activations or tensor in doc.params:
            return True
        node = producers.get(tensor)
        if node is None or node.op_type not in GRID_PRESERVING_OPS or not node.input:
            return False
        tensor = node.input[0]
    return False
