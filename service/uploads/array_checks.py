"""Array contents checked as they stream: dtype allow-list, samples present, every float finite.

Data for calibration and evaluation is numbers: booleans, integers and IEEE floats up to 64 bits.
Strings, objects (pickles), complex numbers, dates and structured records are refused, and so are
arrays without samples (the leading dimension is the sample count) and floats that are NaN or ±Inf,
which would poison every range that calibration computes.

>>> dtype_problem(np.dtype("<U3"))
'dtype <U3 (unicode strings)'
>>> dtype_problem(np.dtype("float32")) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

ACCEPTED_DTYPES = "bool, int8-int64, uint8-uint64, float16/32/64"
_KIND_NAMES = {"O": "Python objects (pickled)", "U": "unicode strings", "S": "byte strings",
               "V": "raw or structured records", "c": "complex numbers", "M": "dates", "m": "time deltas"}  # fmt: skip
# safetensors dtype -> (numpy view type, mask of the exponent bits, NaN/Inf bit patterns to refuse)
_BIT_FLOATS = {"BF16": (np.uint16, 0x7F80), "F8_E5M2": (np.uint8, 0x7C)}


def dtype_problem(dtype: np.dtype) -> str | None:
    """Why ``dtype`` is not accepted, or None."""
    if dtype.kind in "biu" and dtype.itemsize <= 8 and not dtype.fields:
        return None
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return None
    return f"dtype {dtype.str} ({_KIND_NAMES.get(dtype.kind, 'not a plain number')})"


def samples_problem(shape: Iterable[int]) -> str | None:
    """Why an array of ``shape`` holds no samples, or None."""
    dims = list(shape)
    if not dims:
        return "is a scalar; the leading dimension must be the samples"
    if math.prod(dims) == 0:
        return f"has shape {tuple(dims)} with no elements (zero samples)"
    return None


class FiniteCheck:
    """Feeds chunks of one array's raw bytes; ``bad`` counts NaN/Inf values seen so far."""

    def __init__(self, dtype: np.dtype | str) -> None:
        self.bad = 0
        self._carry = b""
        self._mask: int | None = None
        if isinstance(dtype, str):  # a safetensors dtype name
            if dtype in _BIT_FLOATS:
                view, self._mask = _BIT_FLOATS[dtype]
                self._dtype: np.dtype | None = np.dtype(view)
            elif dtype == "F8_E4M3":  # no infinities; NaN is S.1111.111
                self._dtype, self._mask = np.dtype(np.uint8), -1
            else:
                self._dtype = (
                    np.dtype({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])
                    if dtype in ("F16", "F32", "F64")
                    else None
                )
        else:
            self._dtype = dtype if dtype.kind == "f" else None

    def feed(self, chunk: bytes) -> None:
        if self._dtype is None:
            return
        data = self._carry + chunk
        cut = len(data) - len(data) % self._dtype.itemsize
        self._carry = data[cut:]
        values = np.frombuffer(data, dtype=self._dtype, count=cut // self._dtype.itemsize)
        if self._mask is None:
            self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        elif self._mask == -1:
            self.bad += int(np.count_nonzero((values & 0x7F) == 0x7F))
        else:
            self.bad += int(np.count_nonzero((values & self._mask) == self._mask))
