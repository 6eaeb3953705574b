"""Registry of ATen op -> module conversions used when rebuilding a ``torch.export`` graph.

A converter receives one ATen ``call_function`` node and returns a :class:`Conversion` (the module to call
and the arguments to call it with) or ``None`` when the node cannot become a module (it then stays a
``call_function`` and the validator reports it). A new op is a new registration::

    @register_aten("gelu")
    def _gelu(node, ctx):
        return Conversion(nn.GELU(approximate=kwarg(node, "approximate", 1, "none")), (node.args[0],), "gelu")

Keys are ATen overload-packet names (``"add"`` covers ``aten.add.Tensor`` and ``aten.add.Scalar``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import fx, nn


@dataclass(frozen=True)
class Conversion:
    """A leaf module standing for one ATen node.

    ``args`` are nodes of the exported graph or literals, in the order ``module.forward`` takes them;
    ``name`` is the op part of the generated module name (``"add"`` -> ``layer1.0.add``).
    """

    module: nn.Module
    args: tuple[Any, ...]
    name: str
    tuple_output: bool = field(default=False)
    # The ATen op returns a tuple read only at index 0 (the inference IR's BatchNorm): the module returns
    # that element, and the rebuild maps ``getitem(node, 0)`` to the module's output.
    first_of_tuple: bool = field(default=False)


class ConversionContext(Protocol):
    """What a converter may ask about the exported program."""

    def tensor_of(self, node: Any) -> torch.Tensor | None:
        """The parameter/buffer/constant a placeholder node stands for (a private copy), else None."""
        ...


Converter = Callable[[fx.Node, ConversionContext], Conversion | None]
_CONVERTERS: dict[str, Converter] = {}

# Ops that only move, reshape, select, cast or create data: they keep values, so they need no quantizer
# and stay call_function nodes.
DATA_MOVEMENT: frozenset[str] = frozenset(
    {
        "view", "reshape", "_unsafe_view", "permute", "transpose", "t", "flatten", "unflatten", "squeeze",
        "unsqueeze", "expand", "expand_as", "contiguous", "clone", "slice", "select", "index", "index_select",
        "split", "split_with_sizes", "chunk", "unbind", "to", "_to_copy", "type_as", "dropout", "alias",
        "detach", "lift_fresh_copy", "constant_pad_nd", "pad", "repeat", "stack", "narrow", "roll", "flip",
        "pixel_shuffle", "pixel_unshuffle", "zeros_like", "ones_like", "full_like", "empty_like", "full",
        "zeros", "ones", "empty", "arange", "scalar_tensor", "sym_size", "sym_numel", "sym_stride",
        "_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size", "copy", "gather",
        "identity", "feature_dropout", "masked_select", "tile", "movedim", "swapaxes", "new_zeros", "new_ones",
        "new_full", "new_empty", "as_strided", "item", "_local_scalar_dense", "lift_fresh",
    }
)  # fmt: skip


def register_aten(*packet_names: str) -> Callable[[Converter], Converter]:
    """Decorator: use the function as converter for the named ATen overload packets."""

    def decorate(fn: Converter) -> Converter:
        for name in packet_names:
            _CONVERTERS[name] = fn
        return fn

    return decorate


def packet_name(target: Any) -> str | None:
    """``aten.add.Tensor`` -> ``"add"``; None for targets that are not ATen ops (operator.getitem, ...)."""
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target.__name__
    return None


def converter_for(target: Any) -> Converter | None:
    """The converter registered for an ATen op target, if any (in-place ``relu_`` uses ``relu``'s)."""
    name = packet_name(target)
    if name is None:
        return None
    if name not in _CONVERTERS and is_inplace(target):
        name = name[:-1]
    return _CONVERTERS.get(name)


def is_inplace(target: Any) -> bool:
    """Whether an ATen op writes into its first argument (``aten.relu_``, ``aten.add_``)."""
    name = packet_name(target)
    return bool(name) and name.endswith("_") and not name.startswith("_")  # type: ignore[union-attr]


def inplace_is_safe(node: fx.Node) -> bool:
    """An in-place op may become an out-of-place module when nothing reads its input afterwards."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node) or source.op == "placeholder":
        return False  # writing into a model input or a parameter is a visible side effect
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    return all(order[user] <= order[node] for user in source.users)


def is_data_movement(target: Any) -> bool:
    """Whether ``target`` only moves data (or is plain Python: getitem, symbolic int math)."""
    name = packet_name(target)
    if name is None:
        return True  # operator.getitem, operator.mul on SymInts, ... — never tensor math in an ATen graph
    # in-place forms move data too (eval-mode nn.Dropout(inplace=True) is aten.dropout_)
    return name in DATA_MOVEMENT or (is_inplace(target) and name[:-1] in DATA_MOVEMENT)


def arg(node: fx.Node, name: str, index: int, default: Any = None) -> Any:
    """An ATen node's argument by keyword or position, with the schema default when absent."""
    if name in node.kwargs:
        return node.kwargs[name]
    if len(node.args) > index:
        return node.args[index]
    return default


def output_is_float(node: fx.Node) -> bool:
    """Whether the node produces a floating-point tensor (only those get quantizers)."""
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.is_floating_point()
    if isinstance(val, list | tuple) and val and isinstance(val[0], torch.Tensor):
        return val[0].is_floating_point()
    return False
