"""Cross-layer equalization (DFQ, Nagel et al. 2019) on a torch.fx GraphModule.

For two layers joined by a positively homogeneous activation f (ReLU, PReLU, LeakyReLU, identity:
``f(x/s) = f(x)/s`` for s > 0), dividing output channel c of the first layer by ``s_c`` and multiplying
input channel c of the second by ``s_c`` leaves the function unchanged. With r1 = per-channel max |W1|
(outputs) and r2 = per-channel max |W2| (inputs), ``s = sqrt(r1 / r2)`` makes both ranges
``sqrt(r1·r2)`` — the best per-tensor quantization of both. A conv → depthwise → conv triplet uses
cube roots: ``s12 = r0 / c``, ``s23 = c / r2`` with ``c = cbrt(r0·r1·r2)``.

Chains: Conv/ConvTranspose → Conv/ConvTranspose and, unlike AIMET, Linear → Linear (transformer MLP
blocks) where the joining activation is homogeneous (GELU/SiLU are not, so those pairs are skipped).
A tensor read by anything else (a residual branch) ends the chain; such tensors are equalized instead
as residual streams (core/ptq/cle_streams.py: every layer writing a sum scaled against every layer
reading it), unless ``CleConfig(residual_streams=False)``.

ReLU6 and other clipping activations (Hardtanh) are not homogeneous: their bounds must follow the
scale. ``relu6="clip"`` (the default) turns each one equalized across into a per-channel clip
(core/ptq/channel_clip.py) whose bounds are scaled with the channel, ``clip(x, 0, 6)/s = clip(x/s, 0,
6/s)``, so the equalized model computes exactly what the original did. ``relu6="replace"`` (DFQ, AIMET
< 2.4) swaps ReLU6 for ReLU with a warning — the model then differs wherever an activation exceeded 6;
``relu6="skip"`` (AIMET ≥ 2.4 in effect) does not equalize across clipping activations.

High-bias absorption: where layer 1 had a folded BN (output ≈ N(β, γ²) per channel), the part of the
bias that ReLU never clips, ``c = max(0, β − 3|γ|)`` (all of β with no activation), moves from
layer 1's bias into layer 2's: ``b1 −= c``, ``b2 += W2·c``. Exact away from layer 2's zero padding
and whenever no pre-activation falls below c. Through a per-channel clip ``clip(x, 0, u)`` the upper
bound drops by c too: ``clip(x − c, 0, u − c) + c = clip(x, 0, u)`` when x ≥ c.

``result.bn_fold.bn_stats`` is updated to describe the equalized layers (scaled by the CLE factors, mean
lowered by any absorbed bias), so analytical bias correction after CLE — DFQ's full recipe: CLE,
high-bias absorption, then bias correction — reads statistics that match the weights it corrects.

>>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)))
>>> result = equalize_model(gm)
>>> result.cls_sets
[('0', '2')]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx, nn

from core.errors import ConfigError
from core.ptq.bn_fold import BnFoldResult, BnStats, fold_all_batch_norms
from core.ptq.channel_clip import ChannelClip, clip_bounds
from core.ptq.cle_streams import ResidualStream, find_residual_streams, scale_stream
from core.ptq.graph_walk import (
    CONV_TRANSPOSE_TYPES,
    CONV_TYPES,
    as_graph_module,
    ensure_bias,
    is_module_input,
    module_of,
    single_user,
)
from core.ptq.weight_channels import (
    in_channel_absmax,
    in_channel_sum,
    num_in_channels,
    num_out_channels,
    out_channel_absmax,
    scale_in_channels,
    scale_out_channels,
)

_HOMOGENEOUS = (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.Identity)
_RELU_LIKE = (nn.ReLU,)
_EPS = 1e-12


@dataclass(frozen=True)
class CleConfig:
    """Settings of cross-layer equalization.

    relu6: "clip" (ReLU6/Hardtanh → per-channel clip with scaled bounds, exact), "replace" (ReLU6 →
        ReLU with a warning, then equalize across it) or "skip" (no equalization across clips).
    high_bias_fold: absorb high biases where a folded BN gives the statistics.
    num_sigma: how many standard deviations below the mean ReLU is assumed never to clip.
    passes: rounds of scaling over all sets (chains longer than a pair converge over rounds).
    residual_streams: also equalize across residual additions (core/ptq/cle_streams.py; not in AIMET).
    """

    relu6: Literal["clip", "replace", "skip"] = "clip"
    high_bias_fold: bool = True
    num_sigma: float = 3.0
    passes: int = 4
    residual_streams: bool = True

    def __post_init__(self) -> None:
        if self.relu6 not in ("clip", "replace", "skip"):
            raise ConfigError(f"unknown relu6 handling {self.relu6!r}; choose 'clip', 'replace' or 'skip'")
        if self.passes < 1:
            raise ConfigError(f"passes must be >= 1, got {self.passes}")


@dataclass
class CleResult:
    """What equalization did; ``model`` is the GraphModule edited in place."""

    model: fx.GraphModule
    bn_fold: BnFoldResult | None
    cls_sets: list[tuple[str, ...]] = field(default_factory=list)
    relu6_replaced: list[str] = field(default_factory=list)
    clips_scaled: list[str] = field(default_factory=list)
    high_bias_absorbed: list[tuple[str, str]] = field(default_factory=list)
    residual_streams: list[ResidualStream] = field(default_factory=list)


@dataclass
class _Link:
    """layer --(activation)--> next layer."""

    layer: str
    activation: str | None
    next_layer: str


def _family(module: nn.Module | None) -> str | None:
    if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES):
        return f"conv{module.weight.dim()}"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _is_depthwise(module: nn.Module) -> bool:
    groups = int(getattr(module, "groups", 1))
    return (
        isinstance(module, CONV_TYPES)
        and groups > 1
        and groups == num_in_channels(module) == num_out_channels(module)
    )


def _is_relu6(module: nn.Module | None) -> bool:
    return isinstance(module, nn.ReLU6) or (
        isinstance(module, nn.Hardtanh) and module.min_val == 0.0 and module.max_val == 6.0
    )


def _is_clip(module: nn.Module | None) -> bool:
    return isinstance(module, ChannelClip) or clip_bounds(module) is not None


def _crossable(relu6: str) -> Any:
    """Which clipping activations equalization may cross, for a ``relu6`` mode."""
    if relu6 == "clip":
        return _is_clip
    if relu6 == "replace":
        return _is_relu6
    return lambda _m: False


def _find_links(gm: fx.GraphModule, relu6: str) -> tuple[dict[str, _Link], list[str]]:
    """One link per layer whose output flows, through at most one homogeneous (or, per ``relu6``,
    clipping) activation, only into the data input of a layer of the same family. Returns (links by
    first layer, clipping activation nodes crossed)."""
    crossable = _crossable(relu6)
    links: dict[str, _Link] = {}
    relu6_used: list[str] = []
    for node in gm.graph.nodes:
        family = _family(module_of(gm, node))
        if family is None:
            continue
        user = single_user(node)
        if user is None or not is_module_input(node, user):
            continue
        activation: fx.Node | None = None
        act_module = module_of(gm, user)
        if isinstance(act_module, _HOMOGENEOUS) or crossable(act_module):
            activation = user
            user = single_user(user)
            if user is None or not is_module_input(activation, user):
                continue
        if _family(module_of(gm, user)) != family:
            continue
        if activation is not None and crossable(module_of(gm, activation)):
            relu6_used.append(str(activation.target))
        links[str(node.target)] = _Link(
            str(node.target), str(activation.target) if activation is not None else None, str(user.target)
        )
    return links, relu6_used


def _cls_sets(gm: fx.GraphModule, links: dict[str, _Link]) -> list[tuple[str, ...]]:
    """Split chains into pairs and (conv, depthwise, conv) triplets, in forward order."""
    targets = {link.next_layer for link in links.values()}
    sets: list[tuple[str, ...]] = []
    for start in links:
        if start in targets:
            continue
        chain = [start]
        while chain[-1] in links:
            chain.append(links[chain[-1]].next_layer)
        i = 0
        while i < len(chain) - 1:
            middle = gm.get_submodule(chain[i + 1])
            if i + 2 < len(chain) and _is_depthwise(middle):
                sets.append((chain[i], chain[i + 1], chain[i + 2]))
                i += 2
            else:
                sets.append((chain[i], chain[i + 1]))
                i += 1
    return sets


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    ok = (num > _EPS) & (den > _EPS)
    return torch.where(ok, num / den.clamp_min(_EPS), torch.ones_like(num))


def _scale_pair(first: nn.Module, second: nn.Module) -> torch.Tensor:
    r1, r2 = out_channel_absmax(first), in_channel_absmax(second)
    s = torch.sqrt(_safe_ratio(r1, r2))
    with torch.no_grad():
        scale_out_channels(first, 1.0 / s)
        scale_in_channels(second, s)
    return 1.0 / s


def _scale_triplet(
    first: nn.Module, depthwise: nn.Module, last: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    r0, r1, r2 = out_channel_absmax(first), out_channel_absmax(depthwise), in_channel_absmax(last)
    alive = (r0 > _EPS) & (r1 > _EPS) & (r2 > _EPS)
    c = torch.pow((r0 * r1 * r2).clamp_min(_EPS), 1.0 / 3.0)
    s12 = torch.where(alive, r0 / c, torch.ones_like(r0))
    s23 = torch.where(alive, c / r2.clamp_min(_EPS), torch.ones_like(r0))
    with torch.no_grad():
        scale_out_channels(first, 1.0 / s12)
        scale_in_channels(depthwise, s12)
        scale_out_channels(depthwise, 1.0 / s23)
        scale_in_channels(last, s23)
    return 1.0 / s12, 1.0 / s23


def _absorb_high_bias(
    first: Any, second: Any, stats: BnStats, relu: bool, num_sigma: float, cap: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Move the never-clipped part of ``first``'s bias into ``second``; returns the amount moved per
    channel, or None when nothing moved. ``stats`` already carries the equalization scaling; ``cap``:
    a clip's upper bounds, never moved past (the clip's output never exceeds them)."""
    if getattr(first, "bias", None) is None or isinstance(second, CONV_TRANSPOSE_TYPES):
        return None
    c = (stats.beta - num_sigma * stats.gamma.abs()).clamp_min(0.0) if relu else stats.beta
    if cap is not None:
        c = torch.minimum(c, cap.to(c))
    if not bool(torch.any(c != 0)):
        return None
    with torch.no_grad():
        shift = in_channel_sum(second, c.to(second.weight.device))  # type: ignore[union-attr]
        ensure_bias(second)
        second.bias.add_(shift.to(second.bias.dtype))  # type: ignore[union-attr]
        first.bias.sub_(c.to(first.bias.device, first.bias.dtype))  # type: ignore[union-attr]
    return c


def equalize_model(model: nn.Module, config: CleConfig | None = None, *, fold_bn: bool = True) -> CleResult:
    """Fold BNs (unless ``fold_bn=False``), then scale every CLS set and absorb high biases, in place.

    ``model``: a GraphModule (edited in place) or a module that torch.fx can trace. The output is
    unchanged up to float32 rounding, except where documented above (ReLU6 replacement; high-bias
    absorption at padded borders or when a pre-activation falls below its absorbed bias).
    """
    config = config or CleConfig()
    gm = as_graph_module(model)
    bn_result = fold_all_batch_norms(gm) if fold_bn else None
    links, relu6_nodes = _find_links(gm, config.relu6)
    result = CleResult(model=gm, bn_fold=bn_result)
    if config.residual_streams:
        result.residual_streams = find_residual_streams(gm, _family, _HOMOGENEOUS, _crossable(config.relu6))
        relu6_nodes += [n for s in result.residual_streams for n in s.relu6 if n not in relu6_nodes]
    # The layer whose output each crossed clip reads (its width and family give the clip's shape).
    clip_source = {link.activation: link.layer for link in links.values() if link.activation is not None}
    for stream in result.residual_streams:
        clip_source.update({name: stream.producers[0] for name in stream.relu6})
    for name in relu6_nodes:
        parent_name, _, attr = name.rpartition(".")
        parent = gm.get_submodule(parent_name) if parent_name else gm
        if config.relu6 == "replace":
            setattr(parent, attr, nn.ReLU())
            result.relu6_replaced.append(name)
            continue
        bounds = clip_bounds(gm.get_submodule(name))
        if bounds is not None:  # already a ChannelClip otherwise (a model equalized before)
            source = gm.get_submodule(clip_source[name])
            dim = -1 if isinstance(source, nn.Linear) else 1
            setattr(parent, attr, ChannelClip.from_bounds(*bounds, num_out_channels(source), dim))
        result.clips_scaled.append(name)
    if result.relu6_replaced:
        warnings.warn(
            f"cross-layer equalization replaced ReLU6 with ReLU at {', '.join(result.relu6_replaced)}; "
            "pass CleConfig(relu6='skip') to keep ReLU6 and not equalize across it",
            stacklevel=2,
        )
    result.cls_sets = _cls_sets(gm, links)
    out_scale: dict[str, torch.Tensor] = {}

    def record(name: str, factor: torch.Tensor) -> None:
        out_scale[name] = out_scale.get(name, torch.ones_like(factor)) * factor

    for _ in range(config.passes):
        for cls_set in result.cls_sets:
            mods = [gm.get_submodule(n) for n in cls_set]
            if len(mods) == 2:
                record(cls_set[0], _scale_pair(mods[0], mods[1]))
            else:
                f12, f23 = _scale_triplet(mods[0], mods[1], mods[2])
                record(cls_set[0], f12)
                record(cls_set[1], f23)
        for stream in result.residual_streams:
            factor = scale_stream(gm, stream)
            for producer in stream.producers:
                record(producer, factor)

    for name in result.clips_scaled:
        if clip_source[name] in out_scale:
            gm.get_submodule(name).scale_(out_scale[clip_source[name]])  # type: ignore[operator]
    if bn_result is not None:
        # Keep the folded-BN statistics true to the edited layers: scaling output channel c by s_c
        # scales its N(β, γ²) to N(s·β, (s·γ)²). Analytical bias correction reads them afterwards.
        for layer, factor in out_scale.items():
            if layer in bn_result.bn_stats:
                stats = bn_result.bn_stats[layer]
                bn_result.bn_stats[layer] = BnStats(gamma=stats.gamma * factor, beta=stats.beta * factor)
    if config.high_bias_fold and bn_result is not None:
        for layer, stats in list(bn_result.bn_stats.items()):
            link = links.get(layer)
            if link is None:
                continue
            act = gm.get_submodule(link.activation) if link.activation is not None else None
            clip = act if isinstance(act, ChannelClip) and not bool(torch.any(act.lower != 0)) else None
            if act is not None and not isinstance(act, _RELU_LIKE) and clip is None:
                continue
            first, second = gm.get_submodule(layer), gm.get_submodule(link.next_layer)
            cap = clip.upper if clip is not None else None
            moved = _absorb_high_bias(first, second, stats, act is not None, config.num_sigma, cap)
            if moved is not None and clip is not None:
                clip.upper.sub_(moved.to(clip.upper))
            if moved is not None:
                # The layer's pre-activation mean dropped by what moved; its spread is unchanged.
                bn_result.bn_stats[layer] = BnStats(gamma=stats.gamma, beta=stats.beta - moved)
                result.high_bias_absorbed.append((layer, link.next_layer))
    gm.recompile()
    return result
