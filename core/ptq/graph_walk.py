"""Small queries on a torch.fx graph that the PTQ techniques share: which module a node calls,
which node is the single consumer of another, and whether a tensor escapes a linear chain.

Only ``call_module`` nodes carry weights, so every query speaks in terms of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
WEIGHTED_TYPES = (*CONV_TYPES, *CONV_TRANSPOSE_TYPES, nn.Linear)


def as_graph_module(model: nn.Module) -> fx.GraphModule:
    """Return ``model`` if it is already a GraphModule, else a symbolic trace of it."""
    if isinstance(model, fx.GraphModule):
        return model
    return fx.symbolic_trace(model)


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, or None for any other node."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def single_user(node: fx.Node) -> fx.Node | None:
    """The only consumer of ``node``'s output, or None when it has zero or several."""
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def is_module_input(node: fx.Node, user: fx.Node) -> bool:
    """Whether ``node`` is the first positional argument of ``user`` (the data input of a layer)."""
    return bool(user.args) and user.args[0] is node


def delete_module(gm: fx.GraphModule, name: str) -> None:
    """Remove a submodule that no node calls any more."""
    parent_name, _, attr = name.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    delattr(parent, attr)


def out_channel_axis(module: nn.Module) -> int:
    """Axis of ``module.weight`` that indexes output channels (1 for ConvTranspose, else 0)."""
    return 1 if isinstance(module, CONV_TRANSPOSE_TYPES) else 0


def ensure_bias(module: Any) -> torch.Tensor:
    """The module's bias, created as zeros (a trainable parameter) if it had none."""
    if getattr(module, "bias", None) is None:
        weight = module.weight  # type: ignore[union-attr]
        out = weight.shape[out_channel_axis(module)]
        if isinstance(module, CONV_TRANSPOSE_TYPES):
            out *= module.groups
        module.bias = nn.Parameter(torch.zeros(out, dtype=weight.dtype, device=weight.device))  # type: ignore[union-attr]
    return module.bias  # type: ignore[return-value]
