"""Computations whose results are never used are dropped from the prepared graph."""

from __future__ import annotations

import torch
from torch import nn

from core.graph import prepare_model


class UnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        self.unused(y)  # result discarded, like BERT's pooler under a mean-pooling head
        return torch.relu(y)


def test_unused_layer_is_dropped_and_outputs_are_unchanged() -> None:
    model = UnusedHead().eval()
    x = torch.randn(3, 4)
    prepared = prepare_model(model, (x,))
    calls = [str(n.target) for n in prepared.graph.nodes if n.op == "call_module"]
    assert "unused" not in calls and "body" in calls
    assert torch.equal(prepared(x), model(x))
