"""The weighted layers that layer-wise PTQ (AdaRound, SeqMSE) visits, capturing one layer's input or
output from a model run that stops right there, and calibrating the activations those inputs pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.ptq.calibration_batches import Batch
from core.ptq.graph_walk import WEIGHTED_TYPES


class _Stop(Exception):
    """Raised from a hook once the activations of interest are captured: the rest of the forward is skipped."""


def adaroundable_layers(sim: Any) -> list[str]:
    """Names of Conv/ConvTranspose/Linear modules of ``sim.model`` with an enabled weight quantizer,
    in forward (graph) order."""
    names = []
    for node in sim.model.graph.nodes:
        if node.op != "call_module":
            continue
        module = sim.model.get_submodule(str(node.target))
        pq = getattr(module, "param_quantizers", None)
        q = pq["weight"] if pq is not None and "weight" in pq else None
        if (
            isinstance(module, WEIGHTED_TYPES)
            and q is not None
            and q.enabled
            and str(node.target) not in names
        ):
            names.append(str(node.target))
    return names


def capture(model: nn.Module, module: nn.Module, batch: Batch, *, output: bool) -> torch.Tensor:
    """Run ``model`` on ``batch`` just far enough to see ``module``'s input (or output)."""
    seen: list[torch.Tensor] = []

    def pre_hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0])
        raise _Stop

    def post_hook(_m: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> None:
        seen.append(out)
        raise _Stop

    handle = module.register_forward_hook(post_hook) if output else module.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            model(*batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ConfigError(f"layer {type(module).__name__} was not reached by the model's forward pass")
    return seen[0].detach()


def calibrate_activations(sim: Any, batches: list[Batch], cancel: Callable[[], bool] | None) -> None:
    """Give activation quantizers without an encoding one, observed with float weights: the ranges of
    the network AdaRound reconstructs (a 4-bit nearest-rounded one can be broken, its ranges with it)."""
    act = sim.activation_quantizers().values()
    if all(q.encoding is not None for q in act if q.enabled):
        return
    params = [(q, q.enabled) for q in sim.param_quantizers().values()]
    try:
        for q, _ in params:
            q.enabled = False
        for m in sim.quantized_modules().values():
            m.clear_param_cache()
        sim.compute_encodings(batches, cancel=cancel)
    finally:
        for q, enabled in params:
            q.enabled = enabled
        for m in sim.quantized_modules().values():
            m.clear_param_cache()
