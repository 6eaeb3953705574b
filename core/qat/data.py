"""Training data for the built-in QAT loop: input tensors, optional labels, a seeded sample order.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e) — a pure
function of the step number, so a resumed run sees exactly the batches the killed run would have
seen, and every DDP rank computes the same order without communicating. Each global batch of
``batch_size × world_size`` samples is cut into contiguous per-rank slices; the incomplete last
global batch of an epoch is dropped (when the data holds at least one full one) so that every rank
trains on equally many samples and 1 process × 2B equals 2 processes × B.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import DataLoadError


@dataclass(frozen=True)
class TrainData:
    """Model inputs (in input order, leading dimension = samples) and optional labels."""

    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return int(self.inputs[0].shape[0])

    def take(
        self, index: torch.Tensor, device: torch.device
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        inputs = tuple(t[index].to(device, non_blocking=True) for t in self.inputs)
        labels = None if self.labels is None else self.labels[index].to(device, non_blocking=True)
        return inputs, labels


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataLoadError(f"{what} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def as_train_data(train_data: Any, labels: Any = None) -> TrainData:
    """Accept a tensor, a sequence of tensors (one per model input), a name → array mapping, or a
    core.io.CalibrationData (whose ``labels`` are used when ``labels`` is not given)."""
    if (
        hasattr(train_data, "inputs")
        and hasattr(train_data, "labels")
        and isinstance(train_data.inputs, Mapping)
    ):
        if labels is None:
            labels = train_data.labels
        train_data = train_data.inputs
    if isinstance(train_data, Mapping):
        raw = list(train_data.values())
    elif isinstance(train_data, torch.Tensor | np.ndarray):
        raw = [train_data]
    elif isinstance(train_data, Sequence) and not isinstance(train_data, str):
        raw = list(train_data)
    else:
        raise DataLoadError(
            f"train_data of type {type(train_data).__name__} is not supported; pass a tensor, a tuple of "
            "tensors (one per model input), a mapping of input name to array, or a CalibrationData"
        )
    if not raw:
        raise DataLoadError("train_data holds no input arrays")
    inputs = tuple(_tensor(v, f"train input {i}") for i, v in enumerate(raw))
    n = int(inputs[0].shape[0]) if inputs[0].dim() else 0
    if n == 0 or any(t.dim() == 0 or t.shape[0] != n for t in inputs):
        raise DataLoadError(
            f"train inputs need the same non-zero leading (samples) dimension; got shapes {[tuple(t.shape) for t in inputs]}"
        )
    label_tensor = None
    if labels is not None:
        label_tensor = _tensor(labels, "labels")
        if label_tensor.dim() == 0 or label_tensor.shape[0] != n:
            raise DataLoadError(f"labels have shape {tuple(label_tensor.shape)}; expected {n} samples first")
    return TrainData(inputs, label_tensor)


@dataclass(frozen=True)
class Schedule:
    """Which samples each (step, rank) trains on."""

    num_samples: int
    batch_size: int  # per rank
    world_size: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        full = self.num_samples // self.global_batch
        if full == 0:
            if self.world_size > 1:
                raise DataLoadError(
                    f"{self.num_samples} samples cannot fill one batch of {self.batch_size} on each of "
                    f"{self.world_size} ranks; lower batch_size"
                )
            return 1
        return full

    def epoch_order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def indices(self, order: torch.Tensor, step_in_epoch: int, rank: int) -> torch.Tensor:
        start = step_in_epoch * self.global_batch + rank * self.batch_size
        return order[start : start + self.batch_size]
