"""A decomposed activation simulated as the user's own ONNX graph writes it, on the encodings AIMET calibrated.

Under a config that rounds decomposed ops node by node (core/quantsim/decomposed.py) the sim runs GELU
as the chain lowbit's exporter writes (``x/√2 → Erf → +1 → x· → ·0.5``), each intermediate on the grid
derived from the input's. aimet-onnx, run on the user's file, rounds the chain *that* file holds —
torch's dynamo exporter writes ``0.5·(1+erf(x/√2))`` first and multiplies by ``x`` last, so its
intermediates are other tensors — on encodings it calibrated from data. When the file it wrote carries
those, the module's chain becomes the user's (checked to compute the module's function) and rounds on
the file's encodings while the module's input keeps the encoding loaded with them; a later
recalibration of the input falls back to grid-derived encodings over the same chain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch

from core.export.constant_inputs import constant_values
from core.export.records import EncodingsDoc
from core.export.user_names import recorded_names
from core.quant.encoding import QuantSpec
from core.quant.grid_chain import ELEMENTWISE_OPS
from core.quant.quantizer import Quantizer
from core.quantsim.decomposed import ChainNode, PerNodeRounding, chain_values

MAX_CHAIN = 16


def user_chain(graph: onnx.GraphProto, output: str, stops: set[str]) -> tuple[ChainNode, ...] | None:
    """The elementwise nodes of ``graph`` computing ``output`` from one tensor ``x`` and scalar constants,
    in graph order; ``x`` is the first tensor reached that is in ``stops`` or not computed elementwise."""
    producer = {o: n for n in graph.node for o in n.output}
    scalars = {k: v for k, v in constant_values(graph).items() if v.size == 1 and v.dtype.kind == "f"}
    nodes: dict[str, onnx.NodeProto] = {}
    leaves: set[str] = set()
    todo = [output]
    while todo:
        tensor = todo.pop()
        node = producer.get(tensor)
        if tensor in scalars or tensor in nodes:
            continue
        if (tensor != output and tensor in stops) or node is None or node.op_type not in ELEMENTWISE_OPS:
            leaves.add(tensor)
            continue
        nodes[tensor] = node
        todo.extend(node.input)
    if len(leaves) != 1 or not 1 < len(nodes) <= MAX_CHAIN:
        return None
    (x,) = leaves
    order = {id(n): i for i, n in enumerate(graph.node)}
    chain = []
    for name, node in sorted(nodes.items(), key=lambda kv: order[id(kv[1])]):
        args: list[str | float] = []
        for i in node.input:
            args.append("x" if i == x else float(scalars[i].reshape(-1)[0]) if i in scalars else i)
        chain.append(ChainNode(name, node.op_type, tuple(args)))
    if chain[-1].name != output:
        return None
    return tuple(chain)


def _run(chain: tuple[ChainNode, ...], x: torch.Tensor) -> torch.Tensor:
    return chain_values(chain, x)[chain[-1].name]


def same_function(chain: tuple[ChainNode, ...], reference: tuple[ChainNode, ...]) -> bool:
    """Whether two chains compute the same function (in float, over [-8, 8])."""
    x = torch.linspace(-8.0, 8.0, 513)
    return bool(torch.allclose(_run(chain, x), _run(reference, x), rtol=1e-5, atol=1e-6))


class CalibratedChainRounding(PerNodeRounding):
    """:class:`PerNodeRounding` over the user's chain, on the file's encodings for the intermediates while
    the input's encoding is the one loaded with them."""

    def __init__(
        self, base: PerNodeRounding, chain: tuple[ChainNode, ...], loaded: list[Quantizer], key: Any
    ) -> None:
        super().__init__(chain, base.source, base.bitwidth, base.fixed_ranges)
        self.loaded, self.loaded_key = loaded, key

    def _intermediates(self, src: Quantizer, device: torch.device) -> list[Quantizer]:
        if _encoding_key(src) != self.loaded_key:
            return super()._intermediates(src, device)
        if any(q.scale.device != device for q in self.loaded):
            self.loaded = [q.to(device) for q in self.loaded]
        return self.loaded


def _encoding_key(q: Quantizer) -> tuple[float, float, int]:
    enc = q.encoding
    assert enc is not None
    return float(enc.scale.reshape(-1)[0]), float(enc.offset.reshape(-1)[0]), enc.bitwidth


def adopt_user_chains(sim: Any, user_graph: onnx.GraphProto, doc: EncodingsDoc) -> set[str]:
    """Give each per-node-rounded module of ``sim`` the user's chain and, where ``doc`` encodes every
    intermediate, those encodings; the names of the encodings taken."""
    names = recorded_names(sim.model)
    stops = set(names.outputs.values()) | {i.name for i in user_graph.input}
    taken: set[str] = set()
    for target, module in sim.model.named_modules():
        base = module.__dict__.get("_lowbit_per_node")
        output = names.outputs.get((target, "out", 0))
        if not isinstance(base, PerNodeRounding) or output is None:
            continue
        chain = user_chain(user_graph, output, stops)
        if chain is None or not same_function(chain, base.chain):
            continue
        src = base.input_quantizer()
        records = [doc.get(node.name) for node in chain[:-1]]
        usable = [r for r in records if r is not None and r.dtype == "int" and r.granularity == "per_tensor"]
        if src is None or len(usable) != len(records):
            module.__dict__["_lowbit_per_node"] = PerNodeRounding(
                chain, base.source, base.bitwidth, base.fixed_ranges
            )
            continue
        loaded = []
        for record in usable:
            q = Quantizer(QuantSpec(bitwidth=record.bitwidth, symmetric=record.symmetric))
            q.set_encoding(record.to_encoding())
            loaded.append(q)
        module.__dict__["_lowbit_per_node"] = CalibratedChainRounding(base, chain, loaded, _encoding_key(src))
        taken.update(r.name for r in usable)
    return taken


def _rewrite(
    graph: onnx.GraphProto, old: tuple[ChainNode, ...], new: tuple[ChainNode, ...], x: str
) -> dict[str, str] | None:
    """Replace ``old``'s nodes in ``graph`` by ``new``'s, computing the same output tensor; returns the
    graph's name of each of ``new``'s intermediates and scalar constants (by chain name / const name), or
    None (graph untouched) when another node reads an intermediate of ``old``."""
    old_outputs = {n.name for n in old}
    old_nodes = [n for n in graph.node if n.output and n.output[0] in old_outputs]
    outside = [n for n in graph.node if not (n.output and n.output[0] in old_outputs)]
    if {i for n in outside for i in n.input} & (old_outputs - {old[-1].name}):
        return None
    out = old[-1].name
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    names = {n.name: n.name if n.name not in taken else f"{out}/{n.name}" for n in new[:-1]}
    names[new[-1].name] = out
    nodes = []
    for k, node in enumerate(new):
        inputs = []
        for j, arg in enumerate(node.args):
            if isinstance(arg, float):
                name = f"{out}/chain_{k}_{j}"
                value = onnx.numpy_helper.from_array(np.array(arg, dtype=np.float32), name)
                nodes.append(onnx.helper.make_node("Constant", [], [name], value=value))
                names[name] = name
                inputs.append(name)
            else:
                inputs.append(x if arg == "x" else names[arg])
        nodes.append(
            onnx.helper.make_node(node.op, inputs, [names[node.name]], name=f"{names[node.name]}/{node.op}")
        )
    read_after = {i for n in outside for i in n.input}
    dropped = {i for n in old_nodes for i in n.input} - read_after  # constants only the old chain read
    old_ids = {id(n) for n in old_nodes}
    rebuilt: list[onnx.NodeProto] = []
    for node in graph.node:
        if node is old_nodes[0]:
            rebuilt.extend(nodes)
        if id(node) in old_ids or (node.op_type == "Constant" and node.output[0] in dropped):
            continue
        rebuilt.append(node)
    del graph.node[:]
    graph.node.extend(rebuilt)
    return names


def export_user_chains(sim: Any, graph: onnx.GraphProto, tensors: dict[str, str]) -> list[tuple[str, Any]]:
    """Write the user's chain into lowbit's exported ``graph`` for every module the sim rounds over it
    (see :func:`adopt_user_chains`); ``tensors``: quantizer key -> exported tensor. Returns (tensor,
    encoding) for each intermediate and constant the sim rounds, for the file and the QDQ model."""
    from core.quant.grid_chain import constant_encoding
    from core.quantsim.decomposed import chain_of

    stops = set(tensors.values()) | {i.name for i in graph.input}
    written: list[tuple[str, Any]] = []
    for target, module in sim.model.named_modules():
        rounding = module.__dict__.get("_lowbit_per_node")
        output = tensors.get(f"{target}.output.0")
        if not isinstance(rounding, PerNodeRounding) or output is None or rounding.chain == chain_of(module):
            continue
        src = rounding.input_quantizer()
        old = user_chain(graph, output, stops)
        if src is None or old is None or not same_function(old, rounding.chain):
            continue
        x = _input_of(graph, old)
        names = _rewrite(graph, old, rounding.chain, x)
        if names is None:
            continue
        quantizers = rounding._intermediates(src, torch.device("cpu"))
        for node, q in zip(rounding.chain[:-1], quantizers, strict=True):
            written.append((names[node.name], q.encoding))
        for k, node in enumerate(rounding.chain):
            for j, arg in enumerate(node.args):
                if isinstance(arg, float):
                    written.append(
                        (names[f"{output}/chain_{k}_{j}"], constant_encoding(arg, rounding.bitwidth))
                    )
    return written


def _input_of(graph: onnx.GraphProto, chain: tuple[ChainNode, ...]) -> str:
    producer = {o: n for n in graph.node for o in n.output}
    for node in chain:
        if "x" in node.args:
            return producer[node.name].input[node.args.index("x")]
    raise ValueError("chain without input")


__all__ = ["adopt_user_chains", "export_user_chains", "same_function", "user_chain"]
