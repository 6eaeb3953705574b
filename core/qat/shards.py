"""Sharded training data: the manifest, and which sample each rank trains on at each step.

A training set too large for one file is many ``.npz``/``.safetensors`` shards listed by a
:class:`ShardManifest` (shard locator + sample count each). The plan below is pure index math on
the manifest — no shard is read to decide anything — so every rank, a restarted rank and a resumed
job compute the same plan without communicating:

* **lanes** split the data: in epoch ``e`` the shards are permuted with a generator seeded by
  (seed, e) and dealt round-robin to ``lanes`` lanes; rank ``r`` of ``W`` reads lanes ``r, r+W, …``
  (disjoint shards, so disjoint samples, per rank and epoch).
* within a lane, samples pass through a **shuffle buffer** of ``buffer`` samples (seeded by
  (seed, e, lane)): the lane's emission order is simulated on indices, so the reader needs to hold
  at most ``buffer`` + one shard of samples, and a resumed run skips shards it no longer needs.
* a training step takes ``lane_batch`` samples from each lane; the step's global batch is the
  concatenation of all lanes in lane order. The same ``lanes`` and global batch therefore give the
  same batches on 1 process (all lanes) as on ``lanes`` processes (one lane each): keep ``lanes``
  when comparing or resuming with another world size.
* an epoch ends when its shortest lane cannot fill another ``lane_batch`` (the rest is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ConfigError, DataLoadError


@dataclass(frozen=True)
class Shard:
    """One shard file: ``locator`` (an object key or a path, handed to the fetch function), its
    sample count and format (``npz`` or ``safetensors``)."""

    locator: str
    samples: int
    format: str = "npz"


@dataclass(frozen=True)
class ShardManifest:
    """The shards of one training set, in upload order.

    >>> m = ShardManifest((Shard("a.npz", 10), Shard("b.npz", 6)))
    >>> m.num_samples
    16
    """

    shards: tuple[Shard, ...]

    def __post_init__(self) -> None:
        if not self.shards:
            raise DataLoadError("a sharded dataset needs at least one shard")
        for shard in self.shards:
            if shard.samples < 1:
                raise DataLoadError(f"shard {shard.locator!r} holds {shard.samples} samples; needs >= 1")

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        return {
            "shards": [{"locator": s.locator, "samples": s.samples, "format": s.format} for s in self.shards]
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> ShardManifest:
        raw = json.loads(data) if isinstance(data, str) else data
        try:
            shards = tuple(
                Shard(str(s["locator"]), int(s["samples"]), str(s.get("format", "npz")))
                for s in raw["shards"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataLoadError(
                f"shard manifest is malformed ({exc}); expected {{'shards': [{{'locator', 'samples'}}]}}"
            ) from None
        return cls(shards)


@dataclass(frozen=True)
class LanePlan:
    """Lane ``lane``'s shards in epoch order and the order in which their samples come out:
    ``order_shard[i]``/``order_row[i]`` is the i-th sample (index into ``shards``, row in it)."""

    lane: int
    shards: tuple[Shard, ...]
    order_shard: np.ndarray
    order_row: np.ndarray


@dataclass(frozen=True)
class ShardPlan:
    """Which samples every (epoch, step, lane) gets; see the module docstring."""

    manifest: ShardManifest
    lanes: int
    lane_batch: int
    buffer: int
    seed: int = 0

    def __post_init__(self) -> None:
        for label, value in (
            ("lanes", self.lanes),
            ("lane_batch", self.lane_batch),
            ("shuffle buffer", self.buffer),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        if self.lanes > len(self.manifest.shards):
            raise ConfigError(
                f"{self.lanes} data lanes need at least as many shards; the dataset has {len(self.manifest.shards)}"
            )

    def lane_shards(self, epoch: int) -> list[list[int]]:
        """Shard indices of every lane in epoch ``epoch`` (a seeded permutation dealt round-robin)."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.manifest.shards))
        return [[int(i) for i in perm[lane :: self.lanes]] for lane in range(self.lanes)]

    def steps_in_epoch(self, epoch: int) -> int:
        counts = [sum(self.manifest.shards[i].samples for i in lane) for lane in self.lane_shards(epoch)]
        steps = min(counts) // self.lane_batch
        if steps == 0:
            raise DataLoadError(
                f"epoch {epoch}: a data lane holds only {min(counts)} samples, fewer than one batch of "
                f"{self.lane_batch} per lane; lower batch_size or data lanes, or upload more data"
            )
        return steps

    def epoch_starts(self, epochs: int) -> list[int]:
        """The first global step of each epoch, plus the total step count at the end."""
        starts = [0]
        for epoch in range(epochs):
            starts.append(starts[-1] + self.steps_in_epoch(epoch))
        return starts

    def lane(self, epoch: int, lane: int) -> LanePlan:
        """Lane ``lane`` of epoch ``epoch`` with its sample order through the shuffle buffer."""
        indices = self.lane_shards(epoch)[lane]
        shards = tuple(self.manifest.shards[i] for i in indices)
        counts = np.array([s.samples for s in shards], dtype=np.int64)
        read_shard = np.repeat(np.arange(len(shards), dtype=np.int64), counts)
        read_row = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
        order = _buffer_order(
            len(read_shard), self.buffer, np.random.default_rng([self.seed, epoch, lane, 1])
        )
        return LanePlan(lane, shards, read_shard[order], read_row[order])


def _buffer_order(n: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (in reading order) as a shuffle buffer of ``capacity`` emits them: once full, each
    arriving sample replaces a uniformly drawn one, which is emitted; the rest leave shuffled."""
    if n <= capacity:
        return rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    buf = list(range(capacity))
    picks = rng.integers(0, capacity, size=n - capacity)
    for k, incoming in enumerate(range(capacity, n)):
        j = int(picks[k])
        out[k] = buf[j]
        buf[j] = incoming
    out[n - capacity :] = np.asarray(buf, dtype=np.int64)[rng.permutation(capacity)]
    return out


def rank_lanes(lanes: int, world_size: int, rank: int) -> list[int]:
    """The lanes rank ``rank`` reads; ConfigError unless ``lanes`` is a multiple of ``world_size``."""
    if lanes % world_size:
        raise ConfigError(f"data lanes ({lanes}) must be a multiple of the world size ({world_size})")
    return list(range(rank, lanes, world_size))


def lane_batch(batch_size: int, lanes: int, world_size: int) -> int:
    """Samples per lane per step for a per-rank ``batch_size``; ConfigError when it does not divide."""
    per_rank = lanes // world_size
    if batch_size % per_rank:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {per_rank} data lanes each rank reads; "
            "choose a multiple"
        )
    return batch_size // per_rank


def describe(shards: Sequence[Shard]) -> str:
    return f"{len(shards)} shards, {sum(s.samples for s in shards)} samples"
