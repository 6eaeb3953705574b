"""Builds the module hierarchy of a prepared graph: readable, unique, stable names at dotted paths.

Names follow the original model: a layer keeps its path (``layer1.0.conv1``, so its weight stays
``layer1.0.conv1.weight``); functional math gets the path of the module whose ``forward`` ran it plus the op
(``layer1.0.add``); a second call site of the same name gets a suffix (``relu``, ``relu_1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.graph.op_types import has_op_type


def stack_owner(meta: dict[str, Any]) -> tuple[str, str]:
    """(path, class path) of the innermost module in a node's ``nn_module_stack``; ("", "") at top level."""
    stack = meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    if isinstance(cls, type):
        cls = f"{cls.__module__}.{cls.__qualname__}"
    return _clean_path(str(path)), str(cls)


def _clean_path(path: str) -> str:
    # strict-mode dynamo paths look like "L['self'].layer1[0].conv1"; non-strict export gives "layer1.0.conv1"
    if path.startswith("L["):
        path = path.split("]", 1)[1].lstrip(".") if "]" in path else ""
        path = path.replace("[", ".").replace("]", "").replace("'", "").replace('"', "")
    return path


def is_registered_layer(cls_path: str) -> bool:
    """Whether a ``module.Class`` path names a torch layer with an ONNX op type (a leaf worth its own name)."""
    if not cls_path.startswith("torch.nn."):
        return False
    cls = getattr(nn, cls_path.rsplit(".", 1)[-1], None)
    return isinstance(cls, type) and has_op_type(cls)


class ModuleTree:
    """A root ``nn.Module`` being filled with leaf modules and loose tensors at dotted paths."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self._taken: set[str] = set()

    def unique_name(self, base: str) -> str:
        """``base`` if free, else ``base_1``, ``base_2``, ..."""
        base = base.strip(".") or "op"
        name, index = base, 0
        while name in self._taken or self._exists(name):
            index += 1
            name = f"{base}_{index}"
        return name

    def _exists(self, dotted: str) -> bool:
        obj: Any = self.root
        for atom in dotted.split("."):
            if not hasattr(obj, atom):
                return False
            obj = getattr(obj, atom)
        return True

    def _parent(self, dotted: str) -> tuple[nn.Module, str]:
        *prefix, field = dotted.split(".")
        owner = self.root
        for atom in prefix:
            child = owner._modules.get(atom)
            if child is None:
                child = nn.Module()
                owner.add_module(atom, child)
            owner = child
        return owner, field

    def add_module(self, base: str, module: nn.Module) -> str:
        """Place ``module`` at a free name derived from ``base``; returns the name."""
        name = self.unique_name(base)
        owner, field = self._parent(name)
        owner.add_module(field, module)
        self._taken.add(name)
        return name

    def add_tensor(self, dotted: str, tensor: torch.Tensor, persistent: bool = True) -> str:
        """Register a parameter or buffer at ``dotted`` (kept if the same tensor is already there).

        ``persistent=False`` keeps a buffer out of ``state_dict`` (as the original's non-persistent buffers).
        """
        if self._exists(dotted):
            obj: Any = self.root
            for atom in dotted.split("."):
                obj = getattr(obj, atom)
            if obj is tensor:
                return dotted
            dotted = self.unique_name(dotted)
        owner, field = self._parent(dotted)
        if isinstance(tensor, nn.Parameter):
            owner.register_parameter(field, tensor)
        else:
            owner.register_buffer(field, tensor, persistent=persistent)
        self._taken.add(dotted)
        return dotted
