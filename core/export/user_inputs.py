"""The user's tensor behind a quantizer whose tensor in lowbit's export carries another name.

An encodings file aimet-onnx wrote for the user's own ONNX file names every tensor as that file does.
lowbit's export takes the user's names back at module outputs and for parameters claimed once
(core/export/user_names.py), but not for

- a module *input* that is a constant or a tensor lowbit's trace computes differently: the position
  embedding added to the patch tokens, the attention scale, a ``Where`` fill (``const_2`` in lowbit's
  export, ``model.vit.embeddings.position_embeddings`` / ``val_68`` in the user's file), or ViT's class
  token, which the user's graph ``Expand``s from an initializer that aimet-onnx quantizes;
- a parameter several modules read, which the exporter wrote once (random-init LayerNorm weights,
  all ones, share one initializer): the rename is refused, so each quantizer keeps its own name.

The converter recorded, per module, the user tensor it computes; the user's node producing that tensor
reads the module's ``i``-th input at its own input ``i``. That is taken only where the two nodes have
the same op type and, for a constant on both sides, the same value; from there the name is followed
back through grid-preserving producers (an ``Expand`` of an initializer), where aimet-onnx quantizes.

>>> UserTensors.of(sim.model, proto.graph, user_graph).candidates(binding)  # doctest: +SKIP
['val_68']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from core.export.constant_inputs import constant_values
from core.export.grid_preserving import GRID_PRESERVING_OPS, GridGraph
from core.export.records import EncodingsDoc
from core.export.tensor_map import TensorBinding
from core.export.user_names import UserNames, recorded_names
from core.quant.primitives import fake_quantize


@dataclass
class UserTensors:
    names: UserNames
    lowbit_nodes: dict[str, onnx.NodeProto]
    lowbit_constants: dict[str, np.ndarray]
    user_producer: dict[str, onnx.NodeProto]
    user_constants: dict[str, np.ndarray]
    user_grid: GridGraph

    @classmethod
    def of(cls, model: object, graph: onnx.GraphProto, user_graph: onnx.GraphProto) -> UserTensors:
        return cls(
            recorded_names(model),
            {n.name: n for n in graph.node},
            constant_values(graph),
            {o: n for n in user_graph.node for o in n.output},
            constant_values(user_graph),
            GridGraph(user_graph),
        )

    def candidates(self, binding: TensorBinding) -> list[str]:
        """User tensor names for ``binding``, nearest first (empty when the user's graph has no such
        tensor, or the correspondence is not certain)."""
        if binding.role == "param":
            user = self.names.params.get(f"{binding.module}.{binding.index}")
            return [user] if user else []
        if binding.role != "input":
            return []
        user = self._user_input(binding)
        found = []
        while user is not None:
            found.append(user)
            user = self.user_grid.upstream(user)
        return found

    def _user_input(self, binding: TensorBinding) -> str | None:
        output = self.names.outputs.get((binding.module, "out", 0))
        node = self.user_producer.get(output or "")
        index = int(binding.index)
        if node is None or index >= len(node.input) or not node.input[index]:
            return None
        ours = [self.lowbit_nodes[c] for c in binding.consumers if c in self.lowbit_nodes]
        if not ours or any(n.op_type != node.op_type for n in ours):
            return None  # a fused or rewritten module: its input i need not be the user node's
        user = node.input[index]
        mine, theirs = self.lowbit_constants.get(binding.tensor), self.user_constants.get(user)
        if (mine is None) != (theirs is None):
            return None
        if mine is not None and theirs is not None and not _same_values(mine, theirs):
            return None
        return user


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    return a.size == b.size and np.array_equal(a.ravel(), b.ravel())


def exactly_represented(graph: onnx.GraphProto, doc: EncodingsDoc, names: set[str]) -> set[str]:
    """Those of ``names`` that are constants of ``graph`` whose encoding in ``doc`` represents every value
    exactly (to float32 rounding), or that only a ``Where`` reads into an output grid that clamps the
    value and its quantized value alike: quantizing them, as aimet-onnx does with a GELU's ``sqrt(2)``
    or a mask's fill, changes nothing, so a sim without a quantizer there computes the same."""
    constants = constant_values(graph)
    exact = set()
    for name in names:
        value, record = constants.get(name), doc.get(name)
        if value is None or record is None or value.dtype.kind != "f" or record.granularity != "per_tensor":
            continue
        if record.dtype == "float":
            if np.array_equal(value.astype(np.float16).astype(value.dtype), value):
                exact.add(name)
            continue
        x = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        y = fake_quantize(x, record.to_encoding())
        kept = bool(torch.all(torch.isfinite(y))) and np.allclose(y.numpy(), x.numpy(), rtol=1e-6, atol=0.0)
        if kept or _same_where_output(graph, doc, name, x, y):
            exact.add(name)
    return exact


def _same_where_output(
    graph: onnx.GraphProto, doc: EncodingsDoc, name: str, x: torch.Tensor, y: torch.Tensor
) -> bool:
    """A mask's fill (-3.4e38) that its own encoding clamps (to -3.37e38): every ``Where`` reading it
    selects it unchanged into an output whose grid clamps both to the same end, so nothing differs."""
    readers = [n for n in graph.node if name in n.input]
    if not readers:
        return False
    for node in readers:
        out = doc.get(node.output[0]) if node.op_type == "Where" and node.output else None
        if (
            out is None
            or out.dtype != "int"
            or out.granularity != "per_tensor"
            or list(node.input).index(name) == 0
        ):
            return False
        enc = out.to_encoding()
        if not torch.equal(fake_quantize(x, enc), fake_quantize(y, enc)):
            return False
    return True


def encoded_again_downstream(
    graph: onnx.GraphProto, doc: EncodingsDoc, names: set[str], used: set[str]
) -> set[str]:
    """Those of ``names`` read only as the data input of grid-preserving ops (an embedding table by its
    ``Gather``) whose outputs carry the same encoding and set a quantizer: aimet-onnx's 2.0.0 export
    writes the table's encoding on the ``Gather`` output too; rounding twice on one grid is rounding once."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in set(node.input):
            readers.setdefault(i, []).append(node)
    same = set()
    for name in names:
        record, nodes = doc.get(name), readers.get(name, [])
        if record is None or not nodes:
            continue
        for node in nodes:
            out = doc.get(node.output[0]) if node.output else None
            if (
                node.op_type not in GRID_PRESERVING_OPS
                or node.input[0] != name
                or name in node.input[1:]
                or out is None
                or out.name not in used
                or (out.dtype, out.bitwidth, out.granularity)
                != (record.dtype, record.bitwidth, record.granularity)
                or not (np.array_equal(out.scale, record.scale) and np.array_equal(out.offset, record.offset))
            ):
                break
        else:
            same.add(name)
    return same


__all__ = ["UserTensors", "encoded_again_downstream", "exactly_represented"]
