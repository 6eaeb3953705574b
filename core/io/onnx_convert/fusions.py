"""Activation patterns that exporters spell out in elementary ops, rewritten to the one op they are.

``x * 0.5 * (1 + erf(x / sqrt(2)))`` is GELU, ``x * Sigmoid(x)`` is SiLU (ONNX ``Swish``),
``x * HardSigmoid(x)`` is HardSwish, ``x * Tanh(Softplus(x))`` is Mish. Converted node by node they
would be five or two float ops with a quantizer each and no layer+activation supergroup; rewritten,
each becomes one activation module. The fused node takes the name and the output tensor name of
the pattern's last node, so the user's tensor names survive. Intermediate tensors must have no
other reader and must not be graph outputs, or the pattern is left alone.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

_DEFAULT_DOMAINS = ("", "ai.onnx")


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                self.readers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
                    elif attr.name == "value_float":
                        self.constants[node.output[0]] = np.array(attr.f, np.float32)

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        if value is None or value.size != 1 or value.dtype.kind != "f":
            return None
        return float(value.reshape(()))

    def node_of(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or node.domain not in _DEFAULT_DOMAINS:
            return None
        return node

    def private(self, name: str) -> bool:
        """``name`` is read by exactly one node and is no graph output."""
        return len(self.readers.get(name, [])) == 1 and name not in self.outputs

    def sole_reader(self, name: str, op_type: str) -> onnx.NodeProto | None:
        if not self.private(name):
            return None
        node = self.readers[name][0]
        return node if node.op_type == op_type and node.domain in _DEFAULT_DOMAINS else None


def _other(node: onnx.NodeProto, name: str) -> str | None:
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1] if ins[0] == name else ins[0]


def _close(value: float | None, target: float) -> bool:
    return value is not None and math.isclose(value, target, rel_tol=1e-4)


def _gelu(g: _Graph, erf: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto]] | None:
    """Erf(x/√2 or x·(1/√2)) → Add 1 → two Muls by x and 0.5 (in any order)."""
    scaled = erf.input[0]
    if not g.private(scaled):
        return None
    pre = g.producer.get(scaled)
    if pre is None or pre.op_type not in ("Div", "Mul") or len(pre.input) != 2:
        return None
    x, k = pre.input
    if pre.op_type == "Mul" and g.scalar(x) is not None:
        x, k = k, x
    factor = g.scalar(k)
    if not (_close(factor, math.sqrt(2)) if pre.op_type == "Div" else _close(factor, 1 / math.sqrt(2))):
        return None
    add = g.sole_reader(erf.output[0], "Add")
    if add is None or not _close(g.scalar(_other(add, erf.output[0]) or ""), 1.0):
        return None
    pattern = [pre, erf, add]
    first = g.sole_reader(add.output[0], "Mul")
    if first is None:
        return None
    other = _other(first, add.output[0])
    pattern.append(first)
    if other == x or _close(g.scalar(other or ""), 0.5):
        second = g.sole_reader(first.output[0], "Mul")
        if second is None:
            return None
        want = 0.5 if other == x else None
        last_other = _other(second, first.output[0])
        if (want is None and last_other != x) or (
            want is not None and not _close(g.scalar(last_other or ""), 0.5)
        ):
            return None
        pattern.append(second)
        return x, pattern
    half = g.node_of(other or "", "Mul")  # (x * 0.5) * (1 + erf)
    if half is None or not g.private(half.output[0]) or x not in half.input:
        return None
    if not _close(g.scalar(_other(half, x) or ""), 0.5):
        return None
    return x, [half, *pattern]


def _times_self(g: _Graph, act: onnx.NodeProto, x: str) -> onnx.NodeProto | None:
    """The Mul that multiplies ``act``'s output by ``x`` (its sole reader)."""
    mul = g.sole_reader(act.output[0], "Mul")
    return mul if mul is not None and _other(mul, act.output[0]) == x else None


def _silu_like(g: _Graph, node: onnx.NodeProto) -> tuple[str, str, list[onnx.NodeProto]] | None:
    if node.op_type == "Sigmoid":
        mul = _times_self(g, node, node.input[0])
        return None if mul is None else ("Swish", node.input[0], [node, mul])
    if node.op_type == "HardSigmoid":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not (_close(float(attrs.get("alpha", 0.2)), 1 / 6) and _close(float(attrs.get("beta", 0.5)), 0.5)):
            return None
        mul = _times_self(g, node, node.input[0])
        return None if mul is None else ("HardSwish", node.input[0], [node, mul])
    if node.op_type == "Softplus":
        tanh = g.sole_reader(node.output[0], "Tanh")
        mul = None if tanh is None else _times_self(g, tanh, node.input[0])
        return None if mul is None else ("Mish", node.input[0], [node, tanh, mul])  # type: ignore[list-item]
    return None


def fuse_activations(model: onnx.ModelProto) -> int:
    """Rewrite the patterns above in ``model.graph`` in place; returns how many were fused."""
    g = _Graph(model.graph)
    replaced: dict[int, onnx.NodeProto | None] = {}
    for node in g.nodes:
        if node.domain not in _DEFAULT_DOMAINS or id(node) in replaced:
            continue
        found: tuple[str, str, list[onnx.NodeProto]] | None = None
        if node.op_type == "Erf":
            gelu = _gelu(g, node)
            found = None if gelu is None else ("Gelu", gelu[0], gelu[1])
        else:
            found = _silu_like(g, node)
        if found is None or any(id(n) in replaced for n in found[2]):
            continue
        op_type, x, pattern = found
        last = pattern[-1]
        fused = helper.make_node(
            op_type, [x], [last.output[0]], name=last.name or f"{op_type}_{len(replaced)}"
        )
        for n in pattern:
            replaced[id(n)] = None
        replaced[id(last)] = fused
    if not replaced:
        return 0
    kept: list[onnx.NodeProto] = []
    for node in g.nodes:
        if id(node) not in replaced:
            kept.append(node)
        elif (new := replaced[id(node)]) is not None:
            kept.append(new)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return sum(1 for v in replaced.values() if v is not None)
