"""The digits CNN: the same shape as the model behind shared/formats' AIMET golden files.

Three conv + BN + ReLU blocks, global average pool, linear. Module names (conv1, bn1, relu1, ...,
pool, fc) match AIMET's so encodings keys (``conv1.weight``, ``/relu1/Relu_output_0``) line up.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
NUM_CLASSES = 10
IMAGE_SIZE = 8


class DigitsCNN(nn.Module):
    """Input ``(N, 1, 8, 8)`` float in [0, 1]; output ``(N, 10)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))
