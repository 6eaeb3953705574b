"""Techniques a job can run, one module each, registered by name (``quantsim``, ``ptq``, ``qat``,
``analyze``). A new technique is a new module here with ``@register_technique("name")``; the
pipeline never changes.

A technique takes the :class:`~worker.pipeline.context.JobContext` (loaded model, data, spec, device,
monitor) and returns a :class:`~worker.pipeline.context.TechniqueResult` (a calibrated QuantSim to
evaluate and export, extra metrics, extra files).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.errors import ConfigError

if TYPE_CHECKING:
    from worker.pipeline.context import JobContext, TechniqueResult

TechniqueFn = Callable[["JobContext"], "TechniqueResult"]
_TECHNIQUES: dict[str, TechniqueFn] = {}


def register_technique(name: str) -> Callable[[TechniqueFn], TechniqueFn]:
    """Register ``fn`` as the runner of technique ``name``."""

    def deco(fn: TechniqueFn) -> TechniqueFn:
        _TECHNIQUES[name] = fn
        return fn

    return deco


def technique(name: str) -> TechniqueFn:
    """The runner of ``name``; ConfigError naming the available techniques when unknown."""
    if not _TECHNIQUES:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
    try:
        return _TECHNIQUES[name]
    except KeyError:
        raise ConfigError(
            f"technique {name!r} is not available in this worker; available: {', '.join(sorted(_TECHNIQUES))}"
        ) from None
