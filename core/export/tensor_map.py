"""Which ONNX tensor each quantizer of a QuantSim acts on.

Rules (AIMET's): a module's input quantizer ``i`` → the tensor entering its ``i``-th positional
input, output quantizer ``i`` → the tensor leaving its ``i``-th output (model inputs and
outputs keep their graph names), a parameter quantizer → the initializer named like the
parameter (``conv1.weight``). Tensors come from the boundary markers of the export
(core/export/markers.py), not from parsing node names.

>>> tmap.tensor("conv1.param.weight"), tmap.tensor("relu1.output.0")        # doctest: +SKIP
('conv1.weight', '/relu1/Relu_output_0')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import onnx

from core.export.onnx_export import MarkedExport

Role = Literal["input", "output", "param"]


@dataclass(frozen=True)
class TensorBinding:
    """One quantizer's place in the ONNX graph.

    ``consumers`` (input quantizers only): the ONNX nodes of the module that read the tensor,
    so QDQ can quantize that branch alone when the tensor also feeds other modules.
    """

    quantizer: str
    module: str
    role: Role
    index: str
    tensor: str
    consumers: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorMap(Mapping[str, str]):
    """Quantizer key → ONNX tensor name (a read-only mapping); ``bindings`` holds the details and
    ``unmapped`` the quantizers with no tensor in the graph (key → reason)."""

    bindings: dict[str, TensorBinding]
    unmapped: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __getitem__(self, quantizer: str) -> str:
        return self.bindings[quantizer].tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.bindings)

    def __len__(self) -> int:
        return len(self.bindings)

    def tensor(self, quantizer: str) -> str:
        return self.bindings[quantizer].tensor

    def as_dict(self) -> dict[str, str]:
        """Plain ``{quantizer key: tensor name}`` (JSON-friendly)."""
        return {k: b.tensor for k, b in self.bindings.items()}

    def by_tensor(self) -> dict[str, list[TensorBinding]]:
        out: dict[str, list[TensorBinding]] = {}
        for b in self.bindings.values():
            out.setdefault(b.tensor, []).append(b)
        return out


def _split_key(key: str) -> tuple[str, Role, str]:
    module, role, index = key.rsplit(".", 2)
    return module, role, index  # type: ignore[return-value]


def build_tensor_map(
    quantizer_keys: list[str],
    marked: MarkedExport,
    proto: onnx.ModelProto | None = None,
    param_names: Mapping[str, str] | None = None,
) -> TensorMap:
    """Bind each key (``<module>.input.<i>`` / ``.output.<i>`` / ``.param.<name>``) to an ONNX tensor.

    A parameter's tensor is the initializer named like it, or ``param_names[<module>.<name>]`` (the
    user's name of an imported ONNX model's initializer, core/export/user_names.py).
    """
    graph = (proto or marked.model).graph
    known = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        known.update(node.output)
    bindings: dict[str, TensorBinding] = {}
    unmapped: dict[str, str] = {}
    for key in quantizer_keys:
        module, role, index = _split_key(key)
        if role == "param":
            tensor = f"{module}.{index}" if module else index
            tensor = (param_names or {}).get(tensor, tensor)
            if tensor in known:
                bindings[key] = TensorBinding(key, module, role, index, tensor)
            else:
                unmapped[key] = f"parameter {tensor!r} is not an initializer of the exported graph"
            continue
        boundary = (module, "in" if role == "input" else "out", int(index))
        tensor_name = marked.boundaries.get(boundary)
        if tensor_name is None:
            unmapped[key] = f"module {module!r} {role} {index} did not reach the exported graph"
            continue
        bindings[key] = TensorBinding(
            key,
            module,
            role,
            index,
            tensor_name,
            marked.consumers.get(boundary, ()) if role == "input" else (),
        )
    return TensorMap(bindings, unmapped, tuple(marked.warnings))


def tensor_map_json(tmap: TensorMap) -> dict[str, Any]:
    return {"bindings": tmap.as_dict(), "unmapped": dict(tmap.unmapped)}
