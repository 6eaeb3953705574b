"""AutoQuant's mixed-precision stage, as AIMET's AMP does it: per-module sensitivity, then a greedy search
that raises modules in sensitivity order and re-measures after each raise, against relative BitOps.

BitOps of a Conv/Linear = MACs × weight bitwidth × activation bitwidth (AIMET's measure); relative BitOps
divides by the same sum with every layer at the raised bitwidths, so the all-raised model is 1.0. A raise
is kept only if the re-measured score does not drop (re-calibrated activations can make a raise hurt);
the accepted steps form the Pareto curve (relative BitOps, score), monotone by construction: more BitOps
never score less. The search stops when the target is met.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from core.ptq.graph_walk import CONV_TRANSPOSE_TYPES, WEIGHTED_TYPES

RaiseFn = Callable[[Any, str], bool]


def module_macs(sim: Any, example: tuple[Any, ...]) -> dict[str, int]:
    """Multiply-accumulates per sample of each Conv/ConvTranspose/Linear of ``sim.model``."""
    macs: dict[str, int] = {}
    hooks = []
    for name, module in sim.model.named_modules():
        if not isinstance(module, WEIGHTED_TYPES):
            continue

        def hook(m: Any, inputs: Any, out: torch.Tensor, name: str = name) -> None:
            # Every element of the output (of the input, for a transposed conv) costs one weight row.
            per_element = m.weight.numel() // m.weight.shape[0]
            ref = inputs[0] if isinstance(m, CONV_TRANSPOSE_TYPES) else out
            macs[name] = int(ref.numel() // max(ref.shape[0], 1)) * int(per_element)

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            sim.model(*example)
    finally:
        for h in hooks:
            h.remove()
    return macs


def _bits(sim: Any, name: str, default_act: int) -> tuple[int, int]:
    module = sim.model.get_submodule(name)
    weight_bw, act_bw = 32, default_act
    for role, q in module.quantizers().items():
        if not q.enabled:
            continue
        bw = q.spec.bitwidth if q.spec.dtype == "int" else 16
        if role == "param.weight":
            weight_bw = bw
        elif not role.startswith("param."):
            act_bw = bw
    return weight_bw, act_bw


def relative_bitops(sim: Any, macs: dict[str, int], default_act: int, top: tuple[int, int]) -> float:
    """Σ MACs·w·a of ``sim`` over the same sum with every layer at ``top`` = (weight, activation) bits."""
    used = sum(m * w * a for name, m in macs.items() for w, a in [_bits(sim, name, default_act)])
    full = sum(m * top[0] * top[1] for m in macs.values())
    return used / full if full else 1.0


def greedy_mixed_precision(
    sim: Any,
    order: list[str],
    measure: Callable[[Any], float],
    raise_module: RaiseFn,
    target: float,
    bitops: Callable[[Any], float],
    check: Callable[[], None] = lambda: None,
) -> tuple[Any, float, dict[str, Any]]:
    """Raise modules of ``sim`` in ``order``, keeping a raise only if ``measure`` (which re-calibrates and
    scores) does not drop; stop at ``target``. Returns (sim, score, details with the Pareto curve)."""
    score = measure(sim)
    pareto: list[dict[str, Any]] = [{"relative_bitops": bitops(sim), "score": score, "raised": None}]
    raised: list[str] = []
    rejected: list[str] = []
    for name in order:
        if score >= target:
            break
        check()
        trial = copy.deepcopy(sim)
        if not raise_module(trial, name):
            continue
        trial_score = measure(trial)
        if trial_score < score:
            rejected.append(name)
            continue
        sim, score = trial, trial_score
        raised.append(name)
        pareto.append({"relative_bitops": bitops(sim), "score": score, "raised": name})
    return sim, score, {"raised": raised, "rejected": rejected, "pareto": pareto}
