"""Sharded training data: the plan's lanes and shuffle buffer, bounded streaming, resume, and the
1-process-with-all-lanes = N-processes-with-one-lane-each equivalence."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataLoadError
from core.qat import Shard, ShardManifest, ShardPlan, StreamSource
from core.qat.stream import Arrays


def _shards(tmp_path, counts: list[int]) -> tuple[ShardManifest, dict[str, Arrays]]:
    """Shards whose single input holds the global sample id, labels = id % 3."""
    arrays, shards, first = {}, [], 0
    for i, n in enumerate(counts):
        ids = np.arange(first, first + n, dtype=np.float32)
        arrays[f"s{i}"] = ([ids.reshape(n, 1)], (ids % 3).astype(np.int64))
        shards.append(Shard(f"s{i}", n))
        first += n
    return ShardManifest(tuple(shards)), arrays


class _Opener:
    """open_shard over in-memory arrays that counts opens and the most shards open at once."""

    def __init__(self, arrays: dict[str, Arrays]) -> None:
        self.arrays, self.opened, self.lock = arrays, [], threading.Lock()

    def __call__(self, shard: Shard) -> Arrays:
        with self.lock:
            self.opened.append(shard.locator)
        inputs, labels = self.arrays[shard.locator]
        return [a.copy() for a in inputs], None if labels is None else labels.copy()


def _ids(source: StreamSource, start: int = 0) -> list[list[int]]:
    return [inputs[0].reshape(-1).long().tolist() for inputs, _ in source.batches(start)]


def test_every_epoch_visits_each_sample_at_most_once_and_ranks_read_disjoint_shards(tmp_path):
    manifest, arrays = _shards(tmp_path, [7, 5, 9, 6, 8, 4])
    plan = ShardPlan(manifest, lanes=2, lane_batch=3, buffer=5, seed=1)
    for epoch in range(3):
        lanes = plan.lane_shards(epoch)
        assert sorted(lanes[0] + lanes[1]) == list(range(6)) and not set(lanes[0]) & set(lanes[1])
    per_rank = []
    for rank in (0, 1):
        opener = _Opener(arrays)
        source = StreamSource(plan, opener, epochs=2, rank=rank, world_size=2)
        batches = _ids(source)
        assert len(batches) == source.total_steps == sum(plan.steps_in_epoch(e) for e in range(2))
        first_epoch = [i for b in batches[: plan.steps_in_epoch(0)] for i in b]
        assert len(set(first_epoch)) == len(first_epoch)
        per_rank.append(set(first_epoch))
    assert not per_rank[0] & per_rank[1]
    assert _ids(StreamSource(plan, _Opener(arrays), epochs=2, rank=1, world_size=2)) == _ids(
        StreamSource(plan, _Opener(arrays), epochs=2, rank=1, world_size=2)
    )
    assert plan.lane_shards(0) != ShardPlan(manifest, 2, 3, 5, seed=2).lane_shards(0)


def test_one_process_reading_all_lanes_gets_the_union_of_the_ranks_batches(tmp_path):
    manifest, arrays = _shards(tmp_path, [6] * 8)
    plan = ShardPlan(manifest, lanes=2, lane_batch=4, buffer=6, seed=0)
    single = _ids(StreamSource(plan, _Opener(arrays), epochs=2))
    ranks = [_ids(StreamSource(plan, _Opener(arrays), epochs=2, rank=r, world_size=2)) for r in (0, 1)]
    assert single == [a + b for a, b in zip(*ranks, strict=True)]


def test_a_resumed_stream_continues_exactly_and_skips_shards_it_no_longer_needs(tmp_path):
    manifest, arrays = _shards(tmp_path, [10] * 6)
    plan = ShardPlan(manifest, lanes=1, lane_batch=4, buffer=4, seed=3)
    full = _ids(StreamSource(plan, _Opener(arrays), epochs=1))
    opener = _Opener(arrays)
    resumed = _ids(StreamSource(plan, opener, epochs=1), start=10)
    assert resumed == full[10:]
    assert len(opener.opened) < len(manifest.shards)


def test_rows_held_stay_within_the_shuffle_buffer_plus_one_shard(tmp_path):
    manifest, arrays = _shards(tmp_path, [16] * 40)  # 640 samples, 20 x the buffer
    plan = ShardPlan(manifest, lanes=1, lane_batch=8, buffer=32, seed=0)
    source = StreamSource(plan, _Opener(arrays), epochs=1, prefetch=2)
    assert len(_ids(source)) == 80
    assert 32 <= source.peak_pending <= 32 + 16


def test_labels_and_wrong_layouts_are_reported(tmp_path):
    manifest, arrays = _shards(tmp_path, [4, 4])
    source = StreamSource(ShardPlan(manifest, 1, 2, 4), _Opener(arrays), epochs=1)
    _inputs, labels = next(iter(source.batches()))
    assert labels is not None and labels.dtype == torch.int64 and source.label_kind() == "class"
    with pytest.raises(ConfigError, match="at least as many shards"):
        ShardPlan(manifest, lanes=3, lane_batch=1, buffer=4)
    with pytest.raises(DataLoadError, match="fewer than one batch"):
        ShardPlan(manifest, lanes=2, lane_batch=5, buffer=4).steps_in_epoch(0)
    with pytest.raises(ConfigError, match="multiple of the world size"):
        StreamSource(ShardPlan(manifest, 1, 2, 4), _Opener(arrays), epochs=1, rank=0, world_size=2)
    lying = {**arrays, "s1": ([np.zeros((3, 1), np.float32)], None)}
    with pytest.raises(DataLoadError, match="its manifest says 4"):
        _ids(StreamSource(ShardPlan(manifest, 1, 4, 2), _Opener(lying), epochs=1))
    with pytest.raises(DataLoadError, match="malformed"):
        ShardManifest.from_json({"shards": [{"samples": 3}]})
