"""Training data for the built-in QAT loop: input tensors, optional labels, a seeded sample order.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e) — a pure
function of the step number, so a resumed run sees exactly the batches the killed run would have
seen, and every DDP rank computes the same order without communicating. Each global batch of
``batch_size × world_size`` samples is cut into contiguous per-rank slices; the incomplete last
global batch of an epoch is dropped (when the data holds at least one full one) so that every rank
trains on equally many samples and 1 process × 2B equals 2 processes × B.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


class InMemorySource:
    """The batches of one rank over in-memory TrainData: ``Schedule``'s seeded per-epoch order, each
    global batch cut into per-rank slices (the source core.qat.loop uses for tensors and arrays)."""

    def __init__(
        self, data: TrainData, batch_size: int, epochs: int, *, rank: int, world_size: int, seed: int
    ) -> None:
        self.data, self.rank, self.batch_size = data, rank, batch_size
        self.schedule = Schedule(data.num_samples, batch_size, world_size, seed)
        self.steps_per_epoch = self.schedule.steps_per_epoch
        self.total_steps = epochs * self.steps_per_epoch

    @property
    def num_samples(self) -> int:
        return self.data.num_samples

    def resume_key(self) -> dict[str, Any]:
        """What a checkpoint must match to continue this data stream."""
        return {
            "batch_size": self.batch_size,
            "world_size": self.schedule.world_size,
            "num_samples": self.num_samples,
        }

    def label_kind(self) -> str | None:
        """None (no labels), 'class' (integer labels) or 'float' (regression targets)."""
        if self.data.labels is None:
            return None
        return "float" if self.data.labels.is_floating_point() else "class"

    def probe_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(t[:1] for t in self.data.inputs)

    def epoch_of(self, step: int) -> tuple[int, int]:
        return divmod(step, self.steps_per_epoch)

    def is_epoch_end(self, step: int) -> bool:
        return (step + 1) % self.steps_per_epoch == 0

    def batches(
        self, start: int = 0, stop_at: int | None = None
    ) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
        order_epoch, order = -1, torch.empty(0)
        cpu = torch.device("cpu")
        for step in range(start, self.total_steps if stop_at is None else min(stop_at, self.total_steps)):
            epoch, in_epoch = self.epoch_of(step)
            if epoch != order_epoch:
                order, order_epoch = self.schedule.epoch_order(epoch), epoch
            yield self.data.take(self.schedule.indices(order, in_epoch, self.rank), cpu)

    def bn_batches(self, num_batches: int) -> list[tuple[torch.Tensor, ...]]:
        """The first ``num_batches`` batches in storage order (BN re-estimation after training)."""
        n = min(self.num_samples, num_batches * self.batch_size)
        cpu = torch.device("cpu")
        return [
            self.data.take(torch.arange(i, min(i + self.batch_size, n)), cpu)[0]
            for i in range(0, n, self.batch_size)
        ]
