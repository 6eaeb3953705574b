"""The histogram kernel of calibration (numba), for the SQNR/MSE/percentile range setters.

``torch.histc`` is a scalar loop; this kernel is a serial ``nogil`` numba loop, cut into
contiguous ranges on a few Python threads (as many as torch may use) for large tensors. A
numba-parallel version needs per-chunk partial counts whose allocation and reduction cost more
than the split saves. Without numba, or for non-contiguous/non-float32/non-CPU tensors, callers
fall back to ``torch.histc``.

The other hot loops need no kernel of their own: min/max is ``torch.aminmax``, and inference
fake-quant is four in-place torch passes (see core/quant/primitives.py for why that beats a
single-pass kernel inside a real forward).
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch

# Below this size the call overhead (~µs) beats any gain.
MIN_ELEMENTS = 1 << 15
# From this size a histogram is split across threads (a thread handoff costs tens of µs).
SPLIT_ELEMENTS = 1 << 21

try:  # numba is an optional accelerator: the engine is correct without it.
    if os.environ.get("LOWBIT_DISABLE_NUMBA"):
        raise ImportError("disabled by LOWBIT_DISABLE_NUMBA")
    import numba

    @numba.njit(cache=True, nogil=True)
    def _histogram_range(
        x: Any, lo: Any, hi: Any, bins: int, start: int, end: int
    ) -> Any:  # pragma: no cover
        counts = np.zeros(bins, dtype=np.int64)
        scale = bins / (hi - lo)
        for i in range(start, end):
            v = x[i]
            if v >= lo and v <= hi:  # same inclusion rule as torch.histc; NaN falls out
                b = int((v - lo) * scale)
                if b >= bins:
                    b = bins - 1
                counts[b] += 1
        return counts

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    AVAILABLE = False


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lowbit-kernel")
        return _POOL


def _ranges(n: int) -> list[tuple[int, int]]:
    parts = max(1, torch.get_num_threads()) if n >= SPLIT_ELEMENTS else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _run(kernel: Any, n: int, *args: Any) -> list[Any]:
    """``kernel(*args, start, end)`` over [0, n), split across threads when n is large; results in order."""
    ranges = _ranges(n)
    if len(ranges) == 1:
        return [kernel(*args, 0, n)]
    futures = [_pool(len(ranges) - 1).submit(partial(kernel, *args, a, b)) for a, b in ranges[1:]]
    first = kernel(*args, *ranges[0])
    return [first] + [f.result() for f in futures]


def _usable(x: torch.Tensor) -> bool:
    return (
        AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and x.numel() >= MIN_ELEMENTS
        and not x.requires_grad
    )


def histogram(x: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor | None:
    """Counts of x in `bins` equal bins over [lo, hi] (torch.histc semantics), or None if not applicable."""
    if not _usable(x):
        return None
    flat = x.detach().numpy().reshape(-1)
    parts = _run(_histogram_range, flat.size, flat, np.float32(lo), np.float32(hi), bins)
    return torch.from_numpy(np.sum(parts, axis=0) if len(parts) > 1 else parts[0])
