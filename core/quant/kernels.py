"""Single-pass CPU kernels (numba) for the two hot loops of simulation and calibration.

PyTorch runs quantize-dequantize as four element-wise passes (mul, round, clamp, mul) or as
its fused fake-quant kernel, which is not vectorised on CPU; either costs 3–4× a ReLU. These
kernels do one read and one write per element, which is what brings QuantSim's forward close
to FP32 speed. They are bit-exact with torch's fused kernel (float32 ``rint(x · (1/s))``,
clamp, multiply). Without numba, or for non-contiguous/non-float32/non-CPU tensors, callers
fall back to torch ops.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import torch

# Below this size the numba call overhead (~µs) beats any gain.
MIN_ELEMENTS = 1 << 15
_CHUNK = 1 << 15

try:  # numba is an optional accelerator: the engine is correct without it.
    if os.environ.get("LOWBIT_DISABLE_NUMBA"):
        raise ImportError("disabled by LOWBIT_DISABLE_NUMBA")
    import numba

    # numba's own thread pool, not OpenMP: torch uses OpenMP too, and numba's OpenMP layer changes
    # torch's thread count. The workqueue layer cannot run two launches at once, hence _LOCK.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _fq_per_tensor(
        x: Any, out: Any, s: Any, inv: Any, lo: Any, hi: Any
    ) -> None:  # pragma: no cover - jitted
        n = x.size
        for c in numba.prange((n + _CHUNK - 1) // _CHUNK):
            start = c * _CHUNK
            end = min(n, start + _CHUNK)
            for i in range(start, end):
                v = np.rint(x[i] * inv)
                out[i] = min(max(v, lo), hi) * s

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _histogram(x: Any, lo: Any, hi: Any, bins: Any) -> Any:  # pragma: no cover - jitted
        n = x.size
        nchunks = (n + _CHUNK - 1) // _CHUNK
        partial = np.zeros((nchunks, bins), dtype=np.int64)
        scale = bins / (hi - lo)
        for c in numba.prange(nchunks):
            start = c * _CHUNK
            end = min(n, start + _CHUNK)
            for i in range(start, end):
                v = x[i]
                if v >= lo and v <= hi:  # same inclusion rule as torch.histc; NaN falls out
                    b = int((v - lo) * scale)
                    if b >= bins:
                        b = bins - 1
                    partial[c, b] += 1
        return partial.sum(axis=0)

    # fastmath lets LLVM vectorise the min/max reduction; NaN inputs are then unspecified here,
    # which is harmless: the histogram never counts NaN and the sentinel check runs on the result.
    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=True)
    def _min_max(x: Any) -> Any:  # pragma: no cover - jitted
        n = x.size
        nchunks = (n + _CHUNK - 1) // _CHUNK
        lows = np.empty(nchunks, dtype=np.float32)
        highs = np.empty(nchunks, dtype=np.float32)
        for c in numba.prange(nchunks):
            start = c * _CHUNK
            end = min(n, start + _CHUNK)
            lo = x[start]
            hi = x[start]
            for i in range(start + 1, end):
                v = x[i]
                # NaN never compares, so it cannot become the min or max; callers check for NaN separately
                lo = min(lo, v)
                hi = max(hi, v)
            lows[c] = lo
            highs[c] = hi
        return lows.min(), highs.max()

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    AVAILABLE = False


_LOCK = threading.Lock()


def _launch(kernel: Any, *args: Any) -> Any:
    """Run a parallel kernel on as many threads as torch is allowed to use."""
    with _LOCK:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
        return kernel(*args)


def _usable(x: torch.Tensor) -> bool:
    return (
        AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and x.numel() >= MIN_ELEMENTS
        and not x.requires_grad
    )


def fake_quant_per_tensor(
    x: torch.Tensor, s: float, inv: float, lo: float, hi: float, inplace: bool = False
) -> torch.Tensor | None:
    """Quantize-dequantize x in one pass (into x itself when ``inplace``), or None if not applicable."""
    if not _usable(x):
        return None
    out = x if inplace else torch.empty_like(x)
    _launch(
        _fq_per_tensor,
        x.detach().numpy().reshape(-1),
        out.numpy().reshape(-1),
        np.float32(s),
        np.float32(inv),
        np.float32(lo),
        np.float32(hi),
    )
    return out


def min_max(x: torch.Tensor) -> tuple[float, float] | None:
    """(min, max) of x in one pass, or None when the kernel does not apply."""
    if not _usable(x):
        return None
    lo, hi = _launch(_min_max, x.detach().numpy().reshape(-1))
    return float(lo), float(hi)


def histogram(x: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor | None:
    """Counts of x in `bins` equal bins over [lo, hi] (torch.histc semantics), or None if not applicable."""
    if not _usable(x):
        return None
    counts = _launch(_histogram, x.detach().numpy().reshape(-1), np.float32(lo), np.float32(hi), bins)
    return torch.from_numpy(counts)
