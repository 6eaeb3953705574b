"""Pattern helpers on prepared graphs: layer->BN, layer->activation, CLE chains, producers/consumers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.graph import prepare_model
from core.graph.patterns import (
    consumers,
    find_cle_chains,
    find_layer_activation_pairs,
    find_layer_bn_pairs,
    producers,
)
from tests.core.graph.sample_models import cases

CASES = cases()


def prepared(case: str):
    return prepare_model(*CASES[case])


def test_layer_bn_pairs_in_a_resnet() -> None:
    pairs = find_layer_bn_pairs(prepared("residual"))
    assert ("conv1", "bn1") in pairs
    assert ("layer1.0.conv1", "layer1.0.bn1") in pairs
    assert ("layer1.1.downsample.0", "layer1.1.downsample.1") in pairs
    assert len(pairs) == 6  # 1 stem + 2 per block + 1 downsample


def test_layer_whose_output_is_also_read_elsewhere_is_not_paired() -> None:
    class Tap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    gm = prepare_model(Tap().eval(), (torch.randn(1, 2, 4, 4),))
    assert find_layer_bn_pairs(gm) == []


def test_layer_activation_pairs() -> None:
    assert find_layer_activation_pairs(prepared("digits")) == [
        ("bn1", "relu1"),
        ("bn2", "relu2"),
        ("bn3", "relu3"),
    ]
    assert ("fc1", "relu") in find_layer_activation_pairs(prepared("reused_relu"))
    assert ("fc1", "act") in find_layer_activation_pairs(prepared("transformer"))


class DepthwiseChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(4, 16, 1)
        self.relu1 = nn.ReLU()
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.relu2 = nn.ReLU()
        self.project = nn.Conv2d(16, 4, 1)
        self.head1, self.act, self.drop, self.head2 = (
            nn.Linear(4, 8),
            nn.PReLU(),
            nn.Dropout(),
            nn.Linear(8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.relu2(self.dw(self.relu1(self.expand(x)))))
        return self.head2(self.drop(self.act(self.head1(y.mean((2, 3))))))


def test_cle_chains_include_depthwise_and_linear_pairs() -> None:
    gm = prepare_model(DepthwiseChain().eval(), (torch.randn(2, 4, 8, 8),))
    assert find_cle_chains(gm) == [["expand", "dw", "project"], ["head1", "head2"]]


def test_cle_chains_break_at_branches_and_non_equivariant_ops() -> None:
    # residual: each block's first conv feeds the second only through BN (not a joiner) -> no chains
    assert find_cle_chains(prepared("residual")) == []
    assert find_cle_chains(prepared("transformer")) == []  # GELU between fc1 and fc2


def test_producers_and_consumers() -> None:
    gm = prepared("residual")
    assert producers(gm, "layer1.0.add") == ["layer1.0.bn2", "relu"]
    assert consumers(gm, "relu") == ["layer1.0.conv1", "layer1.0.add"]
    with pytest.raises(KeyError, match="nope"):
        producers(gm, "nope")
