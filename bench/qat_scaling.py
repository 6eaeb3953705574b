"""QAT throughput on CPU: samples/s of the built-in loop for world_size 1 and 2 (gloo, one thread
each), streaming the training split from .npz shards (core.qat.StreamSource: prefetch + shuffle
buffer + batches built on a thread while the model trains) next to the same data held in memory.

Called by ``python -m bench qat`` (bench/qat.py) after its accuracy tables; all rows come from one
run so they compare side by side. MobileNet-style digits net, W4A4, regular QAT, batch 64 per
process, one epoch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SHARD = 64
BATCH = 64


def _rank(rank: int, world_size: int, shard_dir: str, init: str, out: str) -> None:
    from bench.models.mobilenet_digits import build_trained_mobilenet_digits
    from bench.qat import _sim
    from core.qat import qat

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world_size)
    bundle = build_trained_mobilenet_digits(seed=0)
    sim = _sim(bundle.model, bundle.calib, "min_max")
    result = qat(sim, _stream(shard_dir, world_size), epochs=1, lr=1e-4, finish=False, distributed=True)
    if rank == 0:
        Path(out).write_text(f"{result.samples_per_second}")
    dist.destroy_process_group()


def _stream(shard_dir: str, world_size: int) -> Any:
    from core.qat import Shard, ShardManifest, ShardPlan, StreamSource

    files = sorted(Path(shard_dir).glob("*.npz"))
    manifest = ShardManifest(tuple(Shard(str(f), SHARD) for f in files))
    plan = ShardPlan(manifest, lanes=2, lane_batch=BATCH // (2 // world_size), buffer=256, seed=0)

    def open_shard(shard: Shard) -> Any:
        with np.load(shard.locator) as data:
            return [data["x"]], data["y"]

    return StreamSource(plan, open_shard, epochs=1)


def scaling_rows(train_x: torch.Tensor, train_y: torch.Tensor) -> list[list[Any]]:
    """[configuration, samples/s, ratio to 1 process in memory] rows."""
    from bench.models.mobilenet_digits import build_trained_mobilenet_digits
    from bench.qat import _sim
    from core.qat import qat

    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        n = len(train_x) // SHARD * SHARD
        for i in range(0, n, SHARD):
            np.savez(
                Path(tmp) / f"{i // SHARD:04d}.npz",
                x=train_x[i : i + SHARD].numpy(),
                y=train_y[i : i + SHARD].numpy(),
            )
        torch.set_num_threads(1)
        bundle = build_trained_mobilenet_digits(seed=0)
        sim = _sim(bundle.model, bundle.calib, "min_max")
        base = qat(sim, train_x[:n], labels=train_y[:n], epochs=1, lr=1e-4, batch_size=BATCH, finish=False)
        rows.append(["1 process, data in memory", base.samples_per_second, 1.0])
        for world_size in (1, 2):
            out, init = Path(tmp) / f"out-{world_size}", Path(tmp) / f"init-{world_size}"
            mp.spawn(_rank, args=(world_size, tmp, str(init), str(out)), nprocs=world_size, join=True)
            sps = float(out.read_text())
            label = (
                f"{world_size} process{'es' if world_size > 1 else ''} (gloo), {n // SHARD} streamed shards"
            )
            rows.append([label, sps, sps / base.samples_per_second])
    os.environ.pop("MASTER_ADDR", None)
    return rows
