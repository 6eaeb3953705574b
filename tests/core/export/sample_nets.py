"""Small models for the export tests: a residual CNN and a transformer block (random weights)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualNet(nn.Module):
    """conv → relu → (conv ‖ 1×1 conv) → add → relu → mean → linear: a branch that rejoins."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.shortcut = nn.Conv2d(8, 8, 1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.conv1(x))
        z = self.relu2(self.conv2(y) + self.shortcut(y))
        return self.fc(z.mean((2, 3)))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP block with functional matmul/softmax/add (prepared into modules)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        h = self.ln1(x)
        q = self.q(h).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, hd).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(self.act(self.ff1(self.ln2(x))))
