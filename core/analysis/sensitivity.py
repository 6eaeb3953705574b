"""Which quantizers cost accuracy: global and per-layer sensitivity of a QuantSim.

* ``global_sensitivity`` — the metric of FP32 (everything off), weights only (param quantizers
  on), activations only, and fully quantized.
* ``per_layer_sensitivity`` — for every quantized layer: the metric with *only* this layer's
  quantizers on (its cost in isolation) and with *all but* this layer's on (what excluding it buys).
* ``per_quantizer_sensitivity`` — the same "all but this one" for single quantizers (a finer
  view for models whose layers carry several activation quantizers, e.g. attention).

The sim's enabled flags are restored afterwards; quantizers that were disabled stay disabled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from core.analysis.metrics import EvalFn


@contextmanager
def enabled_only(sim: Any, keys: Iterable[str]) -> Iterator[None]:
    """Within the block only the quantizers in ``keys`` (that were enabled) are enabled."""
    quantizers = sim.quantizers()
    saved = {k: q.enabled for k, q in quantizers.items()}
    wanted = set(keys)
    try:
        for k, q in quantizers.items():
            q.enabled = saved[k] and k in wanted
        _clear_caches(sim)
        yield
    finally:
        for k, q in quantizers.items():
            q.enabled = saved[k]
        _clear_caches(sim)


def _clear_caches(sim: Any) -> None:
    for module in sim.quantized_modules().values():
        clear = getattr(module, "clear_param_cache", None)
        if clear is not None:
            clear()


def active_keys(sim: Any) -> list[str]:
    return [k for k, q in sim.quantizers().items() if q.enabled]


def layer_groups(sim: Any) -> dict[str, list[str]]:
    """Enabled quantizer keys grouped by quantized module name (layers without any are left out)."""
    groups: dict[str, list[str]] = {}
    for name, module in sim.quantized_modules().items():
        keys = [f"{name}.{role}" for role, q in module.quantizers().items() if q.enabled]
        if keys:
            groups[name] = keys
    return groups


def evaluate(sim: Any, eval_fn: EvalFn, keys: Iterable[str]) -> float:
    with enabled_only(sim, keys):
        sim.model.eval()
        return float(eval_fn(sim.model))


def global_sensitivity(sim: Any, eval_fn: EvalFn) -> dict[str, float]:
    """Metric of FP32, weights-only, activations-only and fully quantized (W+A) simulations."""
    keys = active_keys(sim)
    return {
        "fp32": evaluate(sim, eval_fn, []),
        "weights_only": evaluate(sim, eval_fn, [k for k in keys if ".param." in k]),
        "activations_only": evaluate(sim, eval_fn, [k for k in keys if ".param." not in k]),
        "quantized": evaluate(sim, eval_fn, keys),
    }


def per_layer_sensitivity(
    sim: Any, eval_fn: EvalFn, progress: Callable[[float], None] | None = None
) -> dict[str, dict[str, float]]:
    """layer → {"only_this": metric with only its quantizers on, "all_but_this": the others on}."""
    groups = layer_groups(sim)
    every = active_keys(sim)
    out: dict[str, dict[str, float]] = {}
    for i, (layer, keys) in enumerate(groups.items()):
        mine = set(keys)
        out[layer] = {
            "only_this": evaluate(sim, eval_fn, keys),
            "all_but_this": evaluate(sim, eval_fn, [k for k in every if k not in mine]),
        }
        if progress is not None:
            progress((i + 1) / len(groups))
    return out


def per_quantizer_sensitivity(
    sim: Any, eval_fn: EvalFn, keys: Iterable[str] | None = None
) -> dict[str, float]:
    """quantizer key → metric with every enabled quantizer on except this one."""
    every = active_keys(sim)
    return {key: evaluate(sim, eval_fn, [k for k in every if k != key]) for key in (keys or every)}
