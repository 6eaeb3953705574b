"""Values flowing through the ONNX → torch.fx conversion.

A value is either ``Static`` (known while converting: initializers, constants, folded results) or
``Dynamic`` (an fx node). A Dynamic value carries two *probes*: its result for example inputs
whose dynamic dimensions are 1 and 2. Probes give ranks and shapes to handlers that need them,
and tell whether a ``Shape`` result depends on a dynamic dimension (then it stays in the graph)
or not (then it is folded to a constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

PROBE_SIZES = (1, 2)


@dataclass(frozen=True)
class Static:
    """A tensor known at conversion time."""

    tensor: torch.Tensor

    @property
    def probes(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.tensor for _ in PROBE_SIZES)


@dataclass(frozen=True)
class Dynamic:
    """An fx node of the graph being built, with its value on each probe input."""

    node: fx.Node
    probes: tuple[torch.Tensor, ...]


Value = Static | Dynamic


def probe(value: Value) -> torch.Tensor:
    """The value on the first probe (dynamic dimensions = 1): for ranks, dtypes and static sizes."""
    return value.probes[0]
