"""Benchmark registry: each bench module registers a named function that prints its own table.

Benchmarks are not tests: they print figures (as ratios measured side by side in one run,
because the machines are shared and noisy); tests check correctness.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

BenchFn = Callable[[list[str]], None]
_BENCHES: dict[str, tuple[BenchFn, str]] = {}


def register(name: str, help: str = "") -> Callable[[BenchFn], BenchFn]:
    def deco(fn: BenchFn) -> BenchFn:
        _BENCHES[name] = (fn, help)
        return fn

    return deco


def discover() -> dict[str, tuple[BenchFn, str]]:
    import bench

    for info in pkgutil.iter_modules(bench.__path__):
        if info.name not in ("registry", "models", "__main__", "table"):
            importlib.import_module(f"bench.{info.name}")
    return dict(sorted(_BENCHES.items()))
