"""Encodings for the tensors inside an op the ONNX export decomposes, which aimet-onnx quantizes one by one.

lowbit simulates an activation such as GELU as one module with one output quantizer (the target
runs it as one kernel). Below opset 20 ONNX has no Gelu, so the exported graph holds
``Div → Erf → Add → Mul → Mul`` with scalar Constants, and aimet-onnx puts an activation quantizer
on every one of those outputs; its strict loader rejects a file without them. The fused module's
input is on a known grid, so each intermediate can only take the values the chain computes from
the 2^b grid points: the encoding written for it spans exactly that set (min-max over it, as AIMET's
own calibration of the tensor would at best observe). The input and output keep lowbit's
encodings, so AIMET's simulation differs from lowbit's only by rounding the intermediates on those
grids (corpus BERT: 48.8 dB between the two, top-1 unchanged; the corpus ViT: 26.6 dB, see
tests/core/aimet/test_strict_corpus.py GAPS). A scalar Constant read by such a
chain, or by a quantized op (a ``Where`` mask's fill), gets the encoding of its own value: the grid
spans [min(v, 0), max(v, 0)], so ``v`` is an end of it and is represented to the float32 rounding
of ``scale · 2^b``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
import torch

from core.export.constant_inputs import constant_values
from core.export.records import EncodingRecord, EncodingsDoc
from core.quant.encoding import Encoding, QuantSpec

# Elementwise ops whose output the chain evaluation can compute from its inputs' values.
_ELEMENTWISE: dict[str, Callable[..., torch.Tensor]] = {
    "Div": torch.div,
    "Mul": torch.mul,
    "Add": torch.add,
    "Sub": torch.sub,
    "Erf": torch.special.erf,
    "Tanh": torch.tanh,
    "Sigmoid": torch.sigmoid,
    "Pow": torch.pow,
    "Sqrt": torch.sqrt,
}


def _grid(record: EncodingRecord) -> np.ndarray | None:
    """Every value a per-tensor integer encoding can represent."""
    if record.dtype != "int" or record.granularity != "per_tensor" or record.bitwidth > 16:
        return None
    q = np.arange(2**record.bitwidth, dtype=np.float64)
    return ((q + float(record.offset[0])) * float(record.scale[0])).astype(np.float32)


def decomposed_op_names(graph: onnx.GraphProto, doc: EncodingsDoc, bound: set[str]) -> set[str]:
    """The names :func:`add_decomposed_op_encodings` writes for ``graph`` when the file's other
    entries are ``bound`` (those with a quantizer): what a loader may skip in a file written for
    aimet-onnx."""
    bw = int(doc.quantizer_args.get("activation_bitwidth", 8))
    own = dataclasses.replace(
        doc,
        activations={k: v for k, v in doc.activations.items() if k in bound},
        params={k: v for k, v in doc.params.items() if k in bound},
    )
    return set(add_decomposed_op_encodings(own, graph, bw))


def add_decomposed_op_encodings(
    doc: EncodingsDoc, model: onnx.ModelProto | onnx.GraphProto, bitwidth: int
) -> list[str]:
    """Add encodings for the intermediates of decomposed ops and their scalar constants; the names."""
    if bitwidth > 16:
        return []
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    constants = constant_values(graph)
    # A non-finite fill (a mask's -inf) has no grid of its own (a Where's takes its output's, below).
    scalars = {
        k: v for k, v in constants.items() if v.size == 1 and v.dtype.kind == "f" and np.all(np.isfinite(v))
    }
    encoded = doc.activations.keys() | doc.params.keys()
    # Values a tensor can take, and the single quantized tensor they derive from.
    values: dict[str, np.ndarray] = {}
    root: dict[str, str] = {}
    chain_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        fn = _ELEMENTWISE.get(node.op_type)
        if fn is None or not node.output:
            continue
        args, roots = [], set()
        for name in node.input:
            if name in scalars:
                args.append(scalars[name].reshape(()).astype(np.float32))
                continue
            if name not in values and name in doc.activations:
                grid = _grid(doc.activations[name])
                if grid is None:
                    break
                values[name], root[name] = grid, name
            if name not in values:
                break
            args.append(values[name])
            roots.add(root[name])
        else:
            if len(roots) != 1:
                continue
            out = fn(*(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in args)).numpy()
            if not np.all(np.isfinite(out)):
                continue
            values[node.output[0]], root[node.output[0]] = out, roots.pop()
            chain_nodes.append(node)
    # Keep the intermediates that lead to an encoded output of the same chain (inside a fused op).
    closed: set[str] = set()
    for node in reversed(chain_nodes):
        out = node.output[0]
        if out in encoded or out in closed:
            closed.update(i for i in node.input if i in values and i not in encoded)
    added = []
    spec = QuantSpec(bitwidth=bitwidth)
    for name in sorted(closed, key=list(values).index):
        v = torch.from_numpy(values[name])
        enc = Encoding.from_min_max(v.min(), v.max(), bitwidth=bitwidth, symmetric=False, spec=spec)
        doc.activations[name] = EncodingRecord.from_encoding(name, enc)
        added.append(name)
    added += _expand_as_mul_by_ones(doc, graph, spec)
    # Scalar Constant nodes read by a chain op or by an op with a quantized output.
    constant_nodes = {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    in_chain = {id(n) for n in chain_nodes}
    readers = [n for n in graph.node if n.output and (n.output[0] in doc.activations or id(n) in in_chain)]
    for node in readers:
        for name in node.input:
            if name not in constant_nodes or name in doc.activations:
                continue
            value = constants.get(name)
            if (
                node.op_type == "Where"
                and value is not None
                and value.size == 1
                and value.dtype.kind == "f"
                and not np.all(np.isfinite(value))
                and node.output[0] in doc.activations
            ):
                # A mask's ±inf fill: Where selects it unchanged and its output grid clamps it to
                # that grid's end; on the same grid the fill clamps there first, to the same value.
                doc.activations[name] = dataclasses.replace(doc.activations[node.output[0]], name=name)
                added.append(name)
                continue
            if name not in scalars:
                continue
            v = torch.tensor([float(scalars[name].reshape(-1)[0])])
            enc = Encoding.from_min_max(v, v, bitwidth=bitwidth, symmetric=False, spec=spec)
            doc.activations[name] = EncodingRecord.from_encoding(name, enc)
            added.append(name)
    return added


def _expand_as_mul_by_ones(doc: EncodingsDoc, graph: onnx.GraphProto, spec: QuantSpec) -> list[str]:
    """An Expand exported as ``Mul(x, ConstantOfShape(1))`` (a broadcast CLS token, a pooled norm):
    lowbit's Expand is value-preserving, so ``x`` and the product hold the same values on one grid;
    aimet-onnx quantizes ``x``, the ones and the product. The side without an encoding gets the other
    side's (AIMET then rounds to that grid twice, which is rounding once), the ones the encoding of 1
    (exact)."""
    ones = set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and np.all(onnx.numpy_helper.to_array(value) == 1):
                ones.add(node.output[0])
    added = []
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2 or not node.output:
            continue
        for x, one in (node.input, reversed(node.input)):
            out = node.output[0]
            if one not in ones or one in doc.activations or x in doc.params:
                continue
            if out in doc.activations and x not in doc.activations:
                doc.activations[x] = dataclasses.replace(doc.activations[out], name=x)
                added.append(x)
            elif x in doc.activations and out not in doc.activations:
                doc.activations[out] = dataclasses.replace(doc.activations[x], name=out)
                added.append(out)
            elif out not in doc.activations:
                continue
            v = torch.ones(1)
            doc.activations[one] = EncodingRecord.from_encoding(
                one, Encoding.from_min_max(v, v, bitwidth=spec.bitwidth, symmetric=False, spec=spec)
            )
            added.append(one)
    return added
