"""Tiny models shared by the PTQ tests: conv chains, depthwise triplets, residual blocks.

BN statistics are randomised so folding and equalization have real work to do.
"""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=gen))
                m.bias.data.copy_(torch.randn(n, generator=gen) * 0.5)
    return model.eval()


def conv_chain() -> nn.Module:
    """Conv-BN-ReLU ×2, Conv-BN-PReLU, flatten, Linear-BN1d-ReLU, Linear."""
    torch.manual_seed(0)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 8, 1),
            nn.BatchNorm2d(8),
            nn.PReLU(),
            nn.Flatten(),
            nn.Linear(8 * 6 * 6, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
    )


def depthwise_triplet(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """1x1 expand → depthwise 3x3 → 1x1 project, each with BN (a MobileNetV2 block without residual)."""
    torch.manual_seed(1)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(4, 12, 1, bias=False),
            nn.BatchNorm2d(12),
            act(),
            nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),
            nn.BatchNorm2d(12),
            act(),
            nn.Conv2d(12, 6, 1, bias=False),
            nn.BatchNorm2d(6),
        ),
        seed=1,
    )


class ResidualBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn + identity, relu."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(c)
        self.stem_relu = nn.ReLU()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU()
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.head(self.relu2(x + y))


def residual_block() -> nn.Module:
    torch.manual_seed(2)
    return randomize_bn(ResidualBlock(), seed=2)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())
