"""Parameters registered under several names (tied or shared weights) in the FP32 export.

The TorchScript exporter writes such a parameter once, named after its first registration, and every
reader takes that one initializer. That is kept where the readers are layers of one kind (ALBERT's
shared layer, called per layer): their quantizers bind to the one tensor. Where a weight layer
(Conv, ConvTranspose, Gemm, MatMul) shares its weight with an op of another kind (GPT-2's ``lm_head``
tied to the ``wte`` embedding table, read by Gather), aimet-onnx refuses the graph ("shared
parameter(s) with conflicting consumer types") and the two quantizers hold different encodings
(a Gemm weight's and an embedding table's) that one tensor cannot carry. Such an alias is exported
as an initializer of its own, under its own name, holding the same values.

>>> aliases = shared_parameter_names(model)                 # doctest: +SKIP
>>> with untied(model, conflicting_aliases(aliases, op_types)) as own:    # doctest: +SKIP
...     proto = export(model)                               # 'lm_head.weight' is an initializer
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import nn

# aimet_onnx.meta.connectedgraph: a shared initializer is refused when its readers differ in type
# and one of them is among these.
_WEIGHT_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def shared_parameter_names(model: nn.Module) -> dict[str, str]:
    """``{alias: first name}`` for parameters registered under several names."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in model.named_parameters(remove_duplicate=False):
        canonical = first.setdefault(id(tensor), name)
        if canonical != name:
            aliases[name] = canonical
    return aliases


def conflicting_aliases(aliases: Mapping[str, str], op_types: Mapping[str, str]) -> set[str]:
    """The aliases whose owner's op type and the first owner's differ, one of them a weight layer.

    ``op_types`` maps module names to ONNX op types; an owner without one (not quantized) is no
    conflict.
    """
    found: set[str] = set()
    for alias, canonical in aliases.items():
        types = {op_types.get(name.rpartition(".")[0]) for name in (alias, canonical)}
        if None not in types and len(types) > 1 and types & _WEIGHT_LAYERS:
            found.add(alias)
    return found


@contextmanager
def untied(model: nn.Module, names: set[str]) -> Iterator[set[str]]:
    """``model`` with each parameter in ``names`` replaced by a copy of its own; restored on exit."""
    saved: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for name in sorted(names):
            owner_name, _, field = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            param = owner._parameters[field]
            assert param is not None
            saved.append((owner, field, param))
            owner._parameters[field] = nn.Parameter(param.detach().clone(), requires_grad=False)
        yield names
    finally:
        for owner, field, param in reversed(saved):
            owner._parameters[field] = param
