"""Turning what users pass as calibration data into a re-iterable list of input batches.

Accepted: an object with ``.batches(batch_size)`` (core.io.CalibrationData), a tensor (split along the
first dimension), or an iterable of batches (each a tensor or a tuple/list of tensors).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from core.errors import DataLoadError

Batch = tuple[Any, ...]


def _as_tuple(batch: Any) -> Batch:
    return tuple(batch) if isinstance(batch, tuple | list) else (batch,)


def _batch_len(batch: Batch) -> int:
    for t in batch:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return 1


def materialize_batches(data: Any, num_samples: int | None = None, batch_size: int = 32) -> list[Batch]:
    """Up to ``num_samples`` samples of ``data`` as a list of input tuples (the last batch trimmed).

    Raises DataLoadError when ``data`` yields nothing."""
    if hasattr(data, "batches"):
        source: Iterable[Any] = data.batches(batch_size)
    elif isinstance(data, torch.Tensor):
        source = data.split(batch_size)
    else:
        source = data
    batches: list[Batch] = []
    seen = 0
    for raw in source:
        batch = _as_tuple(raw)
        n = _batch_len(batch)
        if num_samples is not None and seen + n > num_samples:
            keep = num_samples - seen
            batch = tuple(t[:keep] if isinstance(t, torch.Tensor) and t.dim() > 0 else t for t in batch)
            n = keep
        if n > 0:
            batches.append(batch)
            seen += n
        if num_samples is not None and seen >= num_samples:
            break
    if not batches:
        raise DataLoadError("calibration data is empty; pass at least one batch of model inputs")
    return batches


def to_device(batch: Batch, device: torch.device) -> Batch:
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)
