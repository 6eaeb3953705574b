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
from core.io.loaded_model import LoadedModel

ModelLoader = Callable[[Path], LoadedModel]

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


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a model file into a :class:`LoadedModel` (eval-mode torch module + I/O description).

    Accepted: ``.pt2`` (``torch.export`` programs, checked for pickled code before loading) and
    ``.onnx`` (converted to a torch.fx GraphModule). Pickled modules (``.pt``/``.pth``) are refused.
    Raises ModelLoadError for an unknown suffix or a file that cannot be loaded safely, and
    UnsupportedOpError for an ONNX operator without a conversion. Example::

        loaded = load_model("examples/digits/artifacts/model.onnx")
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
    return entry[1](p)


def load_exported_program(path: str | os.PathLike[str]):  # -> torch.export.ExportedProgram
    """Load a ``.pt2`` file as a ``torch.export.ExportedProgram`` after the same safety checks as load_model."""
    from core.io.pt2 import load_exported_program as _load

    return _load(Path(path))
