"""SmoothQuant-style migration (Xiao et al. 2023): move per-channel activation outliers into the weights.

Transformer activations carry a few channels 10–100× larger than the rest, which per-tensor 8-bit
activation quantization cannot cover without losing the others; weights are easy by comparison. For a
LayerNorm whose output is read only by Linear layers (the q/k/v projections, an MLP's first layer), divide
the LayerNorm's affine weight and bias of channel j by ``s_j`` and multiply input column j of every
reading Linear by ``s_j``: ``Linear(LN(x)/s · s) = Linear(LN(x))`` — exact in float. With
``s_j = max|X_j|^α / max|W_:,j|^(1−α)`` (X the LayerNorm's output on calibration data, W all readers'
weights) the activation and weight ranges of channel j meet in the middle (α = 0.5).

>>> result = apply_smooth_quant(gm, calib_batches, SmoothQuantConfig(alpha=0.5))   # doctest: +SKIP
>>> result.migrated                                                              # doctest: +SKIP
[('encoder.layer.0.attention.output.LayerNorm', ('encoder.layer.1.attention.self.query', ...))]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from core.errors import ConfigError
from core.ptq.calibration_batches import materialize_batches
from core.ptq.graph_walk import as_graph_module, module_of

_EPS = 1e-8


@dataclass(frozen=True)
class SmoothQuantConfig:
    """alpha: migration strength (0: none, 1: all of the activation range into the weights)."""

    alpha: float = 0.5
    num_samples: int = 128
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")


@dataclass
class SmoothQuantResult:
    model: fx.GraphModule
    migrated: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    scales: dict[str, torch.Tensor] = field(default_factory=dict)


def _norm_readers(gm: fx.GraphModule) -> list[tuple[fx.Node, list[fx.Node]]]:
    """LayerNorms (affine, over the last dim) whose every reader is a Linear taking it as data input."""
    found = []
    for node in gm.graph.nodes:
        norm = module_of(gm, node)
        if (
            not isinstance(norm, nn.LayerNorm)
            or not norm.elementwise_affine
            or len(norm.normalized_shape) != 1
        ):
            continue
        users = list(node.users)
        if users and all(
            isinstance(module_of(gm, u), nn.Linear) and u.args and u.args[0] is node and len(u.args) == 1
            for u in users
        ):
            found.append((node, users))
    return found


def _activation_absmax(
    gm: fx.GraphModule, norms: list[nn.LayerNorm], batches: list[Any]
) -> list[torch.Tensor]:
    maxima: list[torch.Tensor | None] = [None] * len(norms)
    hooks = []
    for i, norm in enumerate(norms):

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, i: int = i) -> None:
            m = out.detach().abs().reshape(-1, out.shape[-1]).amax(0)
            prev = maxima[i]
            maxima[i] = m if prev is None else torch.maximum(prev, m)

        hooks.append(norm.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for batch in batches:
                gm(*batch)
    finally:
        for h in hooks:
            h.remove()
    return [
        m if m is not None else torch.ones(n.normalized_shape[0]) for m, n in zip(maxima, norms, strict=True)
    ]


def apply_smooth_quant(
    model: nn.Module, data: Any, config: SmoothQuantConfig | None = None
) -> SmoothQuantResult:
    """Migrate activation ranges of every LayerNorm → Linear(s) group of ``model`` (a GraphModule edited
    in place, or a traceable module) into the Linears' weights. The output is unchanged up to float32
    rounding."""
    config = config or SmoothQuantConfig()
    gm = as_graph_module(model)
    groups = _norm_readers(gm)
    result = SmoothQuantResult(model=gm)
    if not groups:
        return result
    batches = materialize_batches(data, config.num_samples, config.batch_size)
    norms: list[Any] = [gm.get_submodule(str(n.target)) for n, _ in groups]
    act_max = _activation_absmax(gm, norms, batches)
    for (node, users), norm, x_max in zip(groups, norms, act_max, strict=True):
        linears: list[Any] = [gm.get_submodule(str(u.target)) for u in users]
        w_max = torch.stack([lin.weight.detach().abs().amax(0) for lin in linears]).amax(0)
        ok = (x_max > _EPS) & (w_max > _EPS)
        s = torch.where(
            ok,
            x_max.clamp_min(_EPS).pow(config.alpha) / w_max.clamp_min(_EPS).pow(1 - config.alpha),
            torch.ones_like(x_max),
        ).to(norm.weight.dtype)
        with torch.no_grad():
            norm.weight.div_(s)
            if norm.bias is not None:
                norm.bias.div_(s)
            for lin in linears:
                lin.weight.mul_(s.reshape(1, -1))
        result.migrated.append((str(node.target), tuple(str(u.target) for u in users)))
        result.scales[str(node.target)] = s
    return result
