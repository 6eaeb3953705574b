"""Calibration and evaluation data: named arrays matched to a model's inputs.

A data file holds one array per model input (leading dimension = samples) and, optionally,
``labels`` (leading dimension = samples).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from core.errors import DataLoadError
from core.io.tensor_files import load_tensors

if TYPE_CHECKING:
    from core.io.loaded_model import LoadedModel

__all__ = ["CalibrationData", "load_data", "load_tensors"]

LABELS_KEY = "labels"


@dataclass(frozen=True)
class CalibrationData:
    """Model inputs by name (model input order) and optional labels; all share the leading dimension.

    Example::

        data = load_data("calib.npz", loaded.input_names)
        for (x,) in data.batches(32):
            loaded.module(x)
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: Path | None = None
    # Model input name -> the array's key in the file, where they differ (a single array given to a
    # one-input model): errors name the key the user wrote.
    file_keys: dict[str, str] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Number of samples (the common leading dimension)."""
        return int(next(iter(self.inputs.values())).shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield consecutive batches of inputs as tensors, in input order; the last may be shorter."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DataLoadError(f"batch_size must be a positive integer, got {batch_size!r}")
        arrays = list(self.inputs.values())
        for start in range(0, self.num_samples, batch_size):
            yield tuple(torch.from_numpy(np.ascontiguousarray(a[start : start + batch_size])) for a in arrays)

    def labeled_batches(self, batch_size: int) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
        """Yield ``(inputs, labels)`` batches; raises DataLoadError when the data has no labels."""
        if self.labels is None:
            raise DataLoadError(f"data file {_name(self.source)} has no {LABELS_KEY!r} array")
        labels = self.labels
        for i, inputs in enumerate(self.batches(batch_size)):
            yield (
                inputs,
                torch.from_numpy(np.ascontiguousarray(labels[i * batch_size : (i + 1) * batch_size])),
            )

    def for_model(self, model: LoadedModel) -> CalibrationData:
        """Check the arrays against ``model.example_inputs`` and cast floats to the model's dtypes.

        Rank must match; non-leading dimensions must match where the example's size is not 1 (size
        1 may be a dynamic dimension) and the model does not declare the axis dynamic
        (``model.dynamic_axes``); float data for integer inputs (or the reverse) is refused.
        """
        cast: dict[str, np.ndarray] = {}
        dynamic = model.dynamic_axes or ((),) * len(model.example_inputs)
        for (name, array), example, free in zip(
            self.inputs.items(), model.example_inputs, dynamic, strict=True
        ):
            expected = tuple(example.shape)
            key = self.file_keys.get(name, name)
            where = f"data file {_name(self.source)}: array {key!r}" + (
                f" (model input {name!r})" if key != name else ""
            )
            if array.ndim != len(expected):
                raise DataLoadError(
                    f"{where} has shape {array.shape}; the model expects (samples, ...) like {expected}"
                )
            for axis in range(1, array.ndim):
                if expected[axis] != 1 and axis not in free and array.shape[axis] != expected[axis]:
                    raise DataLoadError(
                        f"{where} has shape {array.shape}; dimension {axis} must be {expected[axis]} "
                        f"(model input shape {expected})"
                    )
            target = torch.empty(0, dtype=example.dtype).numpy().dtype
            if (array.dtype.kind == "f") != (target.kind == "f"):
                raise DataLoadError(f"{where} has dtype {array.dtype}; the model input is {target}")
            cast[name] = array.astype(target, copy=False)
        return CalibrationData(cast, self.labels, self.source, self.file_keys)


def _name(path: Path | None) -> str:
    return repr(str(path)) if path is not None else "(in memory)"


def _select_inputs(
    arrays: dict[str, np.ndarray], input_names: list[str] | None, path: Path
) -> dict[str, np.ndarray]:
    keys = list(arrays)
    if input_names is None:
        return dict(arrays)
    missing = [n for n in input_names if n not in arrays]
    if not missing:
        extra = [k for k in keys if k not in input_names]
        if extra:
            raise DataLoadError(
                f"data file {str(path)!r}: arrays {extra} match no model input; "
                f"accepted: {input_names} and optional {LABELS_KEY!r}"
            )
        return {n: arrays[n] for n in input_names}
    if len(input_names) == 1 and len(keys) == 1:
        return {input_names[0]: arrays[keys[0]]}
    raise DataLoadError(
        f"data file {str(path)!r}: no array for model inputs {missing}; the file holds {keys}; "
        f"accepted: one array per model input named {input_names} (or a single array for a one-input "
        f"model) plus optional {LABELS_KEY!r}"
    )


def _check_array(name: str, array: np.ndarray, path: Path) -> None:
    if array.ndim == 0 or array.shape[0] == 0:
        raise DataLoadError(
            f"data file {str(path)!r}: array {name!r} has shape {array.shape}; "
            "accepted: a leading samples dimension of at least 1"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataLoadError(f"data file {str(path)!r}: array {name!r} contains NaN or infinite values")


def load_data(path: str | os.PathLike[str], input_names: list[str] | None = None) -> CalibrationData:
    """Load a ``.npz``/``.safetensors`` file as CalibrationData for a model with ``input_names``.

    Arrays are matched to inputs by name, or the single array to a one-input model; ``labels``
    is optional. Without ``input_names`` every array except ``labels`` is an input. Raises
    DataLoadError naming the file for anything wrong: unreadable file, pickles or object arrays,
    unknown or missing names, NaN/inf, inconsistent sample counts.
    """
    p = Path(path)
    arrays = load_tensors(p)
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise DataLoadError(
            f"data file {str(p)!r} holds only {LABELS_KEY!r}; accepted: one array per model input"
        )
    inputs = _select_inputs(arrays, input_names, p)
    renamed = {name: key for name, key in zip(inputs, arrays, strict=False) if name not in arrays}
    for name, array in inputs.items():
        _check_array(renamed.get(name, name), array, p)
    if labels is not None:
        _check_array(LABELS_KEY, labels, p)
    counts = {name: a.shape[0] for name, a in inputs.items()}
    if labels is not None:
        counts[LABELS_KEY] = labels.shape[0]
    if len(set(counts.values())) > 1:
        raise DataLoadError(
            f"data file {str(p)!r}: arrays have different sample counts {counts}; "
            "accepted: the same leading dimension for every array"
        )
    return CalibrationData(inputs, labels, p, renamed)
