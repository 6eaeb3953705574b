"""A growable store of per-sample activations that stays in memory within a byte budget and spills
to a memory-mapped file on disk beyond it, so a large layer never exhausts RAM (AIMET OOMs there,
qualcomm/aimet#2698).

>>> cache = ActivationCache(budget_bytes=0)          # everything goes to disk
>>> cache.append(torch.ones(4, 3)); cache.append(torch.zeros(2, 3))
>>> cache.finish(); len(cache), cache.spilled
(6, True)
>>> cache.sample(torch.tensor([0, 5])).tolist()
[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch


class ActivationCache:
    """Samples (first dimension) of one activation tensor, appended batch by batch."""

    def __init__(self, budget_bytes: int, spill_dir: str | Path | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.spill_dir = spill_dir
        self._chunks: list[torch.Tensor] = []
        self._bytes = 0
        self._file: Path | None = None
        self._handle: BinaryIO | None = None
        self._sample_shape: tuple[int, ...] | None = None
        self._count = 0
        self._memmap: np.ndarray | None = None
        self._tensor: torch.Tensor | None = None

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def __len__(self) -> int:
        return self._count

    def append(self, batch: torch.Tensor) -> None:
        batch = batch.detach().to("cpu", torch.float32).contiguous()
        self._sample_shape = tuple(batch.shape[1:])
        self._count += int(batch.shape[0])
        size = batch.numel() * 4
        if self._file is None and self._bytes + size <= self.budget_bytes:
            self._chunks.append(batch)
            self._bytes += size
            return
        if self._file is None:
            self._open_spill_file()
            for chunk in self._chunks:
                self._write(chunk)
            self._chunks = []
        self._write(batch)

    def _open_spill_file(self) -> None:
        fd, name = tempfile.mkstemp(prefix="lowbit-act-", suffix=".f32", dir=self.spill_dir)
        self._file = Path(name)
        self._handle = os.fdopen(fd, "wb")

    def _write(self, chunk: torch.Tensor) -> None:
        assert self._handle is not None
        self._handle.write(chunk.numpy().tobytes())

    def finish(self) -> None:
        """Close writing; afterwards ``sample`` and ``all`` read the stored samples."""
        shape = (self._count, *(self._sample_shape or ()))
        if self._file is not None:
            assert self._handle is not None
            self._handle.close()
            self._memmap = np.memmap(self._file, dtype=np.float32, mode="r", shape=shape)
        else:
            self._tensor = torch.cat(self._chunks) if self._chunks else torch.empty(shape)
            self._chunks = []

    def sample(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows ``indices``, in ascending index order (sequential reads on disk), as a float32 CPU tensor."""
        if self._tensor is not None:
            return self._tensor[indices.sort().values]
        assert self._memmap is not None
        order = np.sort(indices.numpy())  # sorted reads are sequential on disk
        return torch.from_numpy(np.ascontiguousarray(self._memmap[order]))

    def close(self) -> None:
        """Drop the data and delete the spill file."""
        self._tensor = None
        self._memmap = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None
