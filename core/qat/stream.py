"""Streaming sharded training data with bounded memory, overlapped with training.

:class:`StreamSource` turns a :class:`~core.qat.shards.ShardPlan` into the batches of one rank.
``open_shard(shard)`` is the caller's: it returns the shard's arrays (model inputs in input order,
labels or None) — the worker downloads the object to a temporary file, loads it safely
(core.io.load_data) and deletes the file, so local disk holds at most the shards being opened.

Memory per lane: ``prefetch`` opened shards waiting in a queue, one shard being split into rows,
and the rows read but not yet emitted (at most the shuffle buffer plus one shard; rows are copied
out, so a lingering row never pins its whole shard). Batches are assembled in a background thread
``ahead`` steps in front of the training loop (pinned memory when the loop runs on CUDA).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from core.errors import DataLoadError
from core.qat.shards import LanePlan, Shard, ShardPlan, rank_lanes

Arrays = tuple[list[np.ndarray], np.ndarray | None]
OpenShard = Callable[[Shard], Arrays]
Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor | None]
_DONE = object()


class _Prefetcher:
    """Opens ``shards`` in order on a thread, at most ``depth`` ahead of the consumer."""

    def __init__(self, shards: list[Shard], open_shard: OpenShard, depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(shards, open_shard), daemon=True)
        self._thread.start()

    def _run(self, shards: list[Shard], open_shard: OpenShard) -> None:
        for shard in shards:
            try:
                item: Any = open_shard(shard)
            except BaseException as exc:  # handed to the consumer, raised there
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or isinstance(item, BaseException):
                return

    def next(self) -> Arrays:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stop.set()


class LaneReader:
    """Rows of one lane in plan order, from position ``start`` on (earlier rows are skipped, and
    shards holding none of the remaining rows are never opened)."""

    def __init__(self, plan: LanePlan, open_shard: OpenShard, start: int = 0, prefetch: int = 2) -> None:
        self.plan, self.pos = plan, start
        width = int(plan.order_row.max(initial=0)) + 1
        keys = plan.order_shard[start:] * width + plan.order_row[start:]
        self._needed = np.unique(keys)
        self._width = width
        wanted = np.unique(plan.order_shard[start:])
        self._to_open = [int(i) for i in wanted]
        self._prefetch = _Prefetcher([plan.shards[i] for i in self._to_open], open_shard, prefetch)
        self._opened = 0
        self._pending: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self.peak_pending = 0
        self.num_inputs = 0

    def _open_next(self) -> None:
        if self._opened >= len(self._to_open):
            raise DataLoadError(
                f"lane {self.plan.lane}: ran out of shards (a shard held fewer rows than listed)"
            )
        index = self._to_open[self._opened]
        self._opened += 1
        inputs, labels = self._prefetch.next()
        self.num_inputs = len(inputs)
        arrays = [*inputs, *([labels] if labels is not None else [])]
        listed = self.plan.shards[index].samples
        if any(a.shape[0] != listed for a in arrays):
            raise DataLoadError(
                f"shard {self.plan.shards[index].locator!r} holds {arrays[0].shape[0]} samples; its manifest says {listed}"
            )
        base = index * self._width
        lo, hi = np.searchsorted(self._needed, [base, base + self._width])
        for row in (self._needed[lo:hi] - base).tolist():
            self._pending[(index, row)] = tuple(a[row].copy() for a in arrays)
        self.peak_pending = max(self.peak_pending, len(self._pending))

    def take(self, count: int) -> list[tuple[np.ndarray, ...]]:
        rows = []
        for _ in range(count):
            key = (int(self.plan.order_shard[self.pos]), int(self.plan.order_row[self.pos]))
            while key not in self._pending:
                self._open_next()
            rows.append(self._pending.pop(key))
            self.pos += 1
        return rows

    def close(self) -> None:
        self._prefetch.close()
        self._pending.clear()


class StreamSource:
    """The batches of rank ``rank`` of ``world_size`` over ``epochs`` epochs of ``plan``.

    ``num_inputs`` arrays per row are model inputs, a further one (if present) the labels.
    """

    def __init__(
        self,
        plan: ShardPlan,
        open_shard: OpenShard,
        epochs: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
        ahead: int = 2,
        pin_memory: bool = False,
    ) -> None:
        self.plan, self.open_shard, self.epochs = plan, open_shard, epochs
        self.lanes = rank_lanes(plan.lanes, world_size, rank)
        self.prefetch, self.ahead, self.pin_memory = prefetch, ahead, pin_memory
        self.starts = plan.epoch_starts(epochs)
        self.peak_pending = 0
        self._probe: Arrays | None = None

    @property
    def total_steps(self) -> int:
        return self.starts[-1]

    @property
    def num_samples(self) -> int:
        return self.plan.manifest.num_samples

    def epoch_of(self, step: int) -> tuple[int, int]:
        """(epoch, step within it) of global step ``step``."""
        epoch = int(np.searchsorted(self.starts, step, side="right")) - 1
        return epoch, step - self.starts[epoch]

    def is_epoch_end(self, step: int) -> bool:
        """Whether ``step`` (0-based) is the last step of its epoch."""
        return step + 1 in self.starts[1:]

    def bind(self, rank: int, world_size: int) -> None:
        """Read the lanes of ``rank`` of ``world_size`` (the loop calls this with its process group)."""
        self.lanes = rank_lanes(self.plan.lanes, world_size, rank)

    @property
    def batch_size(self) -> int:
        """Samples per rank per step."""
        return self.plan.lane_batch * len(self.lanes)

    def resume_key(self) -> dict[str, Any]:
        """What a checkpoint must match to continue this stream (not the world size: lanes fix the data)."""
        return {
            "num_samples": self.num_samples,
            "shards": len(self.plan.manifest.shards),
            "lanes": self.plan.lanes,
            "lane_batch": self.plan.lane_batch,
            "shuffle_buffer": self.plan.buffer,
        }

    def label_kind(self) -> str | None:
        labels = self.probe()[1]
        if labels is None:
            return None
        return "float" if labels.dtype.kind == "f" else "class"

    def probe_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in self.probe()[0])

    def bn_batches(self, num_batches: int) -> list[tuple[torch.Tensor, ...]]:
        """The first ``num_batches`` batches of the stream (BN re-estimation after training)."""
        return [inputs for inputs, _ in self.batches(0, num_batches)]

    def probe(self) -> Arrays:
        """The arrays of the first shard of lane 0 in epoch 0 (labels present? their dtype?)."""
        if self._probe is None:
            first = self.plan.lane(0, 0).shards[0]
            inputs, labels = self.open_shard(first)
            self._probe = ([a[:1].copy() for a in inputs], None if labels is None else labels[:1].copy())
        return self._probe

    def _assemble(self, readers: list[LaneReader]) -> Batch:
        rows = [row for reader in readers for row in reader.take(self.plan.lane_batch)]
        columns = [np.stack([r[k] for r in rows]) for k in range(len(rows[0]))]
        tensors = [torch.from_numpy(c) for c in columns]
        if self.pin_memory:
            tensors = [t.pin_memory() for t in tensors]
        n_inputs = readers[0].num_inputs
        labels = tensors[n_inputs] if len(tensors) > n_inputs else None
        return tuple(tensors[:n_inputs]), labels

    def _produce(self, start: int, stop_at: int, out: queue.Queue[Any], stop: threading.Event) -> None:
        readers: list[LaneReader] = []
        try:
            epoch = -1
            for step in range(start, stop_at):
                step_epoch, in_epoch = self.epoch_of(step)
                if step_epoch != epoch:
                    for r in readers:
                        self.peak_pending = max(self.peak_pending, r.peak_pending)
                        r.close()
                    epoch = step_epoch
                    offset = in_epoch * self.plan.lane_batch
                    readers = [
                        LaneReader(self.plan.lane(epoch, lane), self.open_shard, offset, self.prefetch)
                        for lane in self.lanes
                    ]
                item: Any = self._assemble(readers)
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as exc:
            out.put(exc)
        finally:
            for r in readers:
                self.peak_pending = max(self.peak_pending, r.peak_pending)
                r.close()

    def batches(self, start: int = 0, stop_at: int | None = None) -> Iterator[Batch]:
        """Batches of steps ``start`` … ``stop_at - 1`` (default: to the end), built ahead on a thread."""
        out: queue.Queue[Any] = queue.Queue(maxsize=max(1, self.ahead))
        stop = threading.Event()
        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        thread = threading.Thread(target=self._produce, args=(start, end, out, stop), daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=30)
