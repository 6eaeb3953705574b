"""``load_model``: dispatch a model file to the loader registered for its format.

A new format is a new module that calls :func:`register_format` at import time and is listed in
``_FORMAT_MODULES`` (imported lazily, so importing core.io stays cheap).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from core.errors import ModelLoadError
from core.io.example_shapes import DataShapes
from core.io.loaded_model import LoadedModel

# (model file, the calibration data's array shapes or None) -> LoadedModel
ModelLoader = Callable[[Path, DataShapes | None], LoadedModel]

_FORMAT_MODULES = ("core.io.pt2", "core.io.onnx_model")
_LOADERS: dict[str, tuple[str, ModelLoader]] = {}


def register_format(name: str, suffixes: tuple[str, ...], loader: ModelLoader) -> None:
    """Register ``loader`` for files whose (lower-case) suffix is in ``suffixes``; ``name`` is the format."""
    for suffix in suffixes:
        _LOADERS[suffix.lower()] = (name, loader)


def _registry() -> dict[str, tuple[str, ModelLoader]]:
    for module in _FORMAT_MODULES:
        importlib.import_module(module)
    return _LOADERS


def supported_suffixes() -> list[str]:
    """File suffixes ``load_model`` accepts, e.g. ``['.onnx', '.pt2']``."""
    return sorted(_registry())


def load_model(path: str | os.PathLike[str], calib: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Load a model file into a :class:`LoadedModel` (eval-mode torch module + I/O description).

    ``calib``, the calibration data file the model will be fed, shapes the example inputs (its
    array shapes are read from its headers): a declared input shape alone never sizes an
    allocation (core.io.example_shapes). Accepted: ``.pt2`` (``torch.export`` programs, checked
    for pickled code before loading) and ``.onnx`` (converted to a torch.fx GraphModule). Pickled
    modules (``.pt``/``.pth``) are refused. Raises ModelLoadError for an unknown suffix or a file
    that cannot be loaded safely, UnsupportedOpError for an ONNX operator without a conversion, and
    DataLoadError for a ``calib`` file that cannot feed the model. Example::

        loaded = load_model("examples/digits/artifacts/model.onnx", calib="calib.npz")
        logits = loaded.module(*loaded.example_inputs)
    """
    p = Path(path)
    registry = _registry()
    entry = registry.get(p.suffix.lower())
    if entry is None:
        raise ModelLoadError(
            f"model file {str(p)!r}: unsupported format {p.suffix!r}; accepted: {', '.join(sorted(registry))} "
            "(pickled .pt/.pth modules are refused: export with torch.export.save or torch.onnx.export)"
        )
    return entry[1](p, DataShapes.read(calib) if calib is not None else None)


def load_exported_program(path: str | os.PathLike[str]):  # -> torch.export.ExportedProgram
    """Load a ``.pt2`` file as a ``torch.export.ExportedProgram`` after the same safety checks as load_model."""
    from core.io.pt2 import load_exported_program as _load

    return _load(Path(path))
