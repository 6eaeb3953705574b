"""Encodings for the tensors inside an op the ONNX export decomposes, which aimet-onnx quantizes one by one.

Below opset 20 ONNX has no Gelu (nor SiLU, nor Mish below 18), so the exported graph holds
``Div → Erf → Add → Mul → Mul`` with scalar Constants, and aimet-onnx puts an activation quantizer
on every one of those outputs; its strict loader rejects a file without them. The op's input is on
a known grid, so each intermediate can only take the values the chain computes from the 2^b grid
points: the encoding written for it spans exactly that set (min-max over it, core/quant/grid_chain.py),
or the range the config fixes for the node's op type (HTP's Sigmoid [0, 1]). A scalar Constant read
by such a chain, or by a quantized op (a ``Where`` mask's fill), gets the encoding of its own value:
the grid spans [min(v, 0), max(v, 0)], so ``v`` is an end of it and is represented to the float32
rounding of ``scale · 2^b``.

Whether lowbit's simulation rounds on these encodings too is the config's ``target.decomposed_ops``
(core/quantsim/decomposed.py): ``per_node`` (AIMET's config files, the HTP presets) rounds them as
aimet-onnx does — corpus ViT and BERT then agree with aimet-onnx exactly, where one-op GELU gave
26.6 and 48.8 dB — and the QDQ model carries them (``DecomposedOps.rounded``); ``fused`` (lowbit's
default and onnxruntime_cpu presets, whose QDQ model ONNX Runtime runs with the chain in float)
keeps GELU one op, and aimet-onnx's simulation of the file then differs by those roundings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx
import torch

from core.export.constant_inputs import constant_values
from core.export.grid_preserving import GridGraph, record_upstream
from core.export.records import EncodingRecord, EncodingsDoc
from core.quant.encoding import Encoding, QuantSpec
from core.quant.grid_chain import (
    ELEMENTWISE_OPS,
    constant_encoding,
    encoding_over,
    fixed_encoding,
    grid_values,
)


@dataclasses.dataclass(frozen=True)
class DecomposedOps:
    """What :func:`add_decomposed_op_encodings` wrote: every name, and those of the chains' nodes and
    constants (``rounded``: what a target that rounds node by node quantizes beyond the sim's own
    quantizers)."""

    names: list[str]
    rounded: list[str]


def _grid(record: EncodingRecord) -> np.ndarray | None:
    """Every value a per-tensor integer encoding can represent."""
    if record.dtype != "int" or record.granularity != "per_tensor" or record.bitwidth > 16:
        return None
    return grid_values(
        float(record.scale.reshape(-1)[0]), float(record.offset.reshape(-1)[0]), record.bitwidth
    )


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
    return set(add_decomposed_op_encodings(own, graph, bw).names)


def add_decomposed_op_encodings(
    doc: EncodingsDoc,
    model: onnx.ModelProto | onnx.GraphProto,
    bitwidth: int,
    fixed_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> DecomposedOps:
    """Add encodings for the intermediates of decomposed ops and their scalar constants.

    ``fixed_ranges``: op type → (min, max) the config fixes for that op's output (AIMET's
    ``encoding_constraints``, e.g. HTP's Sigmoid [0, 1]); such an intermediate gets the fixed range.
    """
    if bitwidth > 16:
        return DecomposedOps([], [])
    fixed_ranges = fixed_ranges or {}
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
    # A chain's input may be a grid-preserving op's output (wav2vec2's LayerNorm -> Transpose -> GELU,
    # its positional conv -> Slice -> GELU): the record sits in front of it, the values are the same.
    moves = GridGraph(graph, model.opset_import if isinstance(model, onnx.ModelProto) else ())
    for node in graph.node:
        fn = ELEMENTWISE_OPS.get(node.op_type)
        if fn is None or not node.output:
            continue
        args, roots = [], set()
        for name in node.input:
            if name in scalars:
                args.append(scalars[name].reshape(()).astype(np.float32))
                continue
            record = doc.activations.get(name) or (
                record_upstream(doc, moves, name) if name not in values else None
            )
            if name not in values and record is not None:
                grid = _grid(record)
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
            chain_nodes.append(node)
            # A non-finite output (rsqrt's 1 / Sqrt(x) at the grid's 0) ends the chain: its inputs are
            # still intermediates (the sim rounds them), the output's own quantizer clamps the inf.
            if np.all(np.isfinite(out)):
                values[node.output[0]], root[node.output[0]] = out, roots.pop()
    # Keep the intermediates that lead to an encoded output of the same chain (inside a fused op).
    closed: set[str] = set()
    for node in reversed(chain_nodes):
        out = node.output[0]
        if out in encoded or out in closed:
            closed.update(i for i in node.input if i in values and i not in encoded and root[i] != i)
    added = []
    spec = QuantSpec(bitwidth=bitwidth)
    op_of = {n.output[0]: n.op_type for n in chain_nodes}
    for name in sorted(closed, key=list(values).index):
        fixed = fixed_ranges.get(op_of.get(name, ""))
        enc = (
            fixed_encoding(*fixed, bitwidth=bitwidth)
            if fixed is not None
            else encoding_over(torch.from_numpy(values[name]), bitwidth)
        )
        doc.activations[name] = EncodingRecord.from_encoding(name, enc)
        added.append(name)
    rounded = list(added)
    added += _expand_as_mul_by_ones(doc, graph, spec)
    # Scalar Constant nodes read by a chain op or by an op with a quantized output.
    constant_nodes = {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    in_chain = {id(n) for n in chain_nodes}
    # The nodes of a decomposed op: those computing an intermediate, and the last, which reads one.
    inside = {id(n) for n in chain_nodes if n.output[0] in closed or any(i in closed for i in n.input)}
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
            enc = constant_encoding(float(scalars[name].reshape(-1)[0]), bitwidth)
            doc.activations[name] = EncodingRecord.from_encoding(name, enc)
            added.append(name)
    for node in chain_nodes:
        if id(node) in inside:
            rounded += [
                i for i in node.input if i in scalars and i in constant_nodes and i in doc.activations
            ]
    return DecomposedOps(added, list(dict.fromkeys(rounded)))


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
