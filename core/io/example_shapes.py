"""Shapes of example inputs and shape probes: from the calibration data when there is some.

A model file's declared input shape is only a claim (a 137-byte ONNX file can declare a 4 TB input),
so a declaration alone never sizes an allocation:

- with calibration data, a fixed non-leading dimension must equal the data's (else DataLoadError,
  before anything is allocated), and an input whose file declares no shape at all takes the data's;
  the leading (samples) dimension keeps a fixed declared size only when the data holds that many
  samples; a size the data does not fill (that batch, or a fixed 1 where the data has more) is
  probed like a dynamic one where the format lets shapes vary (ONNX), else kept;
- dynamic (symbolic) dimensions take a small default (the converter's probe sizes, a program's lower
  bound): probes must differ there to tell which shapes depend on them;
- whatever the source, one example input holds at most MAX_PROBE_ELEMENTS elements.

>>> shapes = DataShapes(Path("calib.npz"), {"images": (8, 16)})
>>> (array,) = shapes.for_inputs(["x"])
>>> example_shape([62_500_000_000, 16], 1, array, what="model input 'x'", shapes_may_vary=True)
[1, 16]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DataLoadError, ModelLoadError
from core.io.data import LABELS_KEY
from core.io.limits import check_probe_shape
from core.io.tensor_files import read_shapes


@dataclass(frozen=True)
class ArrayShape:
    """One data array's shape (samples first) and where it comes from, for error messages."""

    key: str
    shape: tuple[int, ...]
    source: Path

    @property
    def where(self) -> str:
        return f"data file {str(self.source)!r}: array {self.key!r}"


@dataclass(frozen=True)
class DataShapes:
    """The shapes of a calibration data file's arrays by file key, read from headers only."""

    source: Path
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DataShapes:
        """Read the shapes from ``path``'s headers; DataLoadError for a file load_data would refuse too."""
        return cls(Path(path), read_shapes(path))

    def for_inputs(self, input_names: list[str]) -> list[ArrayShape | None]:
        """The array feeding each input, matched as load_data matches (by name, or the single array of
        a one-input model); None where nothing matches (load_data then names the problem)."""
        arrays = {key: shape for key, shape in self.shapes.items() if key != LABELS_KEY}
        if len(input_names) == 1 and input_names[0] not in arrays and len(arrays) == 1:
            ((key, shape),) = arrays.items()
            return [ArrayShape(key, shape, self.source)]
        return [
            ArrayShape(name, arrays[name], self.source) if name in arrays else None for name in input_names
        ]


def _shown(declared: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in declared) + "]"


def example_shape(
    declared: Sequence[int | None] | None,
    dynamic: int | Sequence[int],
    data: ArrayShape | None,
    *,
    what: str,
    shapes_may_vary: bool,
) -> list[int]:
    """The shape of an example input for ``what``.

    ``declared``: the file's dimensions (None for a dynamic one; None for the whole when the file
    declares no shape); ``dynamic``: the size of a dynamic dimension (one for all, or one per axis of
    ``declared``); ``data``: the calibration array feeding the input, if known; ``shapes_may_vary``:
    whether a fixed size the data does not fill may be probed as dynamic (see the module docstring). Raises DataLoadError when the data contradicts a fixed
    dimension and ModelLoadError when the shape exceeds the example-input limit.
    """
    if declared is None:  # the data's shape (a scalar without data), its samples axis dynamic
        declared = [None, *data.shape[1:]] if data is not None and data.shape else []
    defaults = [dynamic] * len(declared) if isinstance(dynamic, int) else list(dynamic)
    if data is None:
        shape = [size if dim is None else dim for dim, size in zip(declared, defaults, strict=True)]
        check_probe_shape(shape, what=what, error=ModelLoadError)
        return shape
    if len(data.shape) != len(declared):
        raise DataLoadError(
            f"{data.where} has shape {data.shape}; {what} declares {_shown(declared)}: "
            f"the data needs {len(declared)} dimensions, samples first"
        )
    shape = []
    for axis, (dim, size, have) in enumerate(zip(declared, defaults, data.shape, strict=True)):
        # A fixed size the data does not fill: a batch larger than the samples, or 1 (what some
        # exporters write for a dynamic axis; CalibrationData.for_model accepts any size there).
        unfilled = dim is not None and ((axis == 0 and dim > have) or (axis > 0 and dim == 1 != have))
        if dim is None or (unfilled and shapes_may_vary):
            shape.append(size)
        elif axis == 0 or unfilled or dim == have:
            shape.append(dim)
        else:
            raise DataLoadError(
                f"{data.where} has shape {data.shape}; dimension {axis} must be {dim} "
                f"({what} declares {_shown(declared)})"
            )
    check_probe_shape(shape, what=what, error=ModelLoadError)
    return shape
