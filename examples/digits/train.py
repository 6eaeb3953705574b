"""Training of the digits CNN on scikit-learn's bundled digits data (no download).

Deterministic: fixed seeds, a fixed split, single-threaded batches in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from examples.digits.model import IMAGE_SIZE, DigitsCNN

SEED = 0
EPOCHS = 12
BATCH_SIZE = 64
EVAL_FRACTION = 0.25


@dataclass(frozen=True)
class DigitsSplit:
    """Images ``(N, 1, 8, 8)`` float32 in [0, 1] and int64 labels, for training and held-out evaluation."""

    train_x: np.ndarray
    train_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray


def load_split(seed: int = SEED) -> DigitsSplit:
    """The digits data set split into training and held-out evaluation samples (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    labels = digits.target.astype(np.int64)
    train_x, eval_x, train_y, eval_y = train_test_split(
        images, labels, test_size=EVAL_FRACTION, random_state=seed, stratify=labels
    )
    return DigitsSplit(train_x, train_y, eval_x, eval_y)


def train(split: DigitsSplit, seed: int = SEED, epochs: int = EPOCHS) -> DigitsCNN:
    """Train a fresh :class:`DigitsCNN` on ``split.train_*``; returns it in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(split.train_x)
    y = torch.from_numpy(split.train_y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on ``images`` against ``labels``."""
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())
