"""Batch-norm folding on a torch.fx GraphModule (eval-mode semantics: running statistics).

With ``a = γ / sqrt(var + eps)`` per channel, a BN computes ``a·x + (β − μ·a)``:

* **backward fold** (layer → BN, the layer's output read only by the BN):
  ``W' = W·a`` on output channels, ``b' = (b − μ)·a + β``. Works for Conv, ConvTranspose, Linear.
* **forward fold** (BN → Conv/Linear, the BN's output read only by that layer, which has no
  padding so every input position really went through the BN): ``W' = W·a`` on input channels,
  ``b' = b + W·(β − μ·a)``. Never into a ConvTranspose (as AIMET).
* a BN that folds nowhere is rewritten as an **affine** BN (mean 0, variance 1 − eps, weight a,
  bias β − μ·a): the same op for export, but its statistics no longer move in training mode.

The folded model's output equals the original's up to float32 rounding (relative error ≤ 1e-5).

>>> gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).eval())
>>> result = fold_all_batch_norms(gm)
>>> result.folded
[('0', '1')]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from core.errors import ConfigError
from core.ptq.graph_walk import (
    BN_TYPES,
    CONV_TRANSPOSE_TYPES,
    CONV_TYPES,
    WEIGHTED_TYPES,
    as_graph_module,
    delete_module,
    ensure_bias,
    is_module_input,
    module_of,
    single_user,
)
from core.ptq.weight_channels import (
    in_channel_sum,
    num_in_channels,
    num_out_channels,
    scale_in_channels,
    scale_out_channels,
)


@dataclass(frozen=True)
class BnStats:
    """What a folded BN says about its layer's output distribution: per channel ≈ N(beta, gamma²).

    Cross-layer equalization uses it for high-bias absorption (AIMET's HighBiasFold)."""

    gamma: torch.Tensor
    beta: torch.Tensor


@dataclass
class BnFoldResult:
    """What folding did. ``model`` is the GraphModule that was modified in place."""

    model: fx.GraphModule
    folded: list[tuple[str, str]] = field(default_factory=list)  # (layer, bn), backward folds
    folded_forward: list[tuple[str, str]] = field(default_factory=list)  # (bn, layer)
    converted_to_affine: list[str] = field(default_factory=list)
    bn_stats: dict[str, BnStats] = field(default_factory=dict)  # layer -> stats of the BN folded into it


def _bn_affine(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, c) with BN(x) = a·x + c per channel, from running statistics."""
    var = bn.running_var.detach().float()  # type: ignore[union-attr]
    mean = bn.running_mean.detach().float()  # type: ignore[union-attr]
    gamma = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(var)  # type: ignore[union-attr]
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(var)  # type: ignore[union-attr]
    a = gamma / torch.sqrt(var + float(bn.eps))  # type: ignore[arg-type]
    return a, beta - mean * a


def _bn_gamma_beta(bn: Any) -> BnStats:
    var = bn.running_var.detach().float()  # type: ignore[union-attr]
    gamma = bn.weight.detach().float().clone() if bn.weight is not None else torch.ones_like(var)  # type: ignore[union-attr]
    beta = bn.bias.detach().float().clone() if bn.bias is not None else torch.zeros_like(var)  # type: ignore[union-attr]
    return BnStats(gamma=gamma, beta=beta)


def _foldable_bn(bn: nn.Module | None) -> bool:
    return isinstance(bn, BN_TYPES) and bn.running_mean is not None and bn.running_var is not None


def fold_bn_into_layer(layer: Any, bn: Any) -> None:
    """Backward fold: ``layer`` followed by ``bn`` becomes ``layer`` alone (weights edited in place)."""
    a, c = _bn_affine(bn)
    weight = layer.weight  # type: ignore[union-attr]
    bias = ensure_bias(layer)
    with torch.no_grad():
        scale_out_channels(layer, a.to(weight.device))
        bias.add_(c.to(bias.device, bias.dtype))


def fold_bn_into_next_layer(bn: Any, layer: Any) -> None:
    """Forward fold: ``bn`` followed by ``layer`` (no padding) becomes ``layer`` alone."""
    a, c = _bn_affine(bn)
    weight = layer.weight  # type: ignore[union-attr]
    bias = ensure_bias(layer)
    with torch.no_grad():
        shift = in_channel_sum(layer, c.to(weight.device))
        scale_in_channels(layer, a.to(weight.device))
        bias.add_(shift.to(bias.device, bias.dtype))


def convert_bn_to_affine(bn: Any) -> None:
    """Rewrite ``bn`` so its running statistics are neutral and its affine parameters carry the math."""
    a, c = _bn_affine(bn)
    with torch.no_grad():
        device = bn.running_mean.device  # type: ignore[union-attr]
        if bn.weight is None:
            bn.weight = nn.Parameter(torch.ones_like(a, device=device))
            bn.bias = nn.Parameter(torch.zeros_like(a, device=device))
            bn.affine = True
        bn.weight.copy_(a)  # type: ignore[union-attr]
        bn.bias.copy_(c)  # type: ignore[union-attr]
        bn.running_mean.zero_()  # type: ignore[union-attr]
        bn.running_var.fill_(1.0 - float(bn.eps))  # type: ignore[union-attr,arg-type]


def _no_padding(layer: Any) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    padding = layer.padding  # type: ignore[union-attr]
    if isinstance(padding, str):
        return padding == "valid"
    return all(p == 0 for p in padding)


def fold_all_batch_norms(model: nn.Module) -> BnFoldResult:
    """Fold every BatchNorm of ``model`` (a GraphModule, edited in place; other modules are traced).

    Backward folds first, then forward folds, then the rest become affine BNs. Modules called
    from more than one node (shared weights) are left alone: folding one call would change the other.
    """
    gm = as_graph_module(model)
    result = BnFoldResult(model=gm)
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")

    def unshared(node: fx.Node) -> bool:
        return calls[str(node.target)] == 1

    erased: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node in erased:
            continue
        layer = module_of(gm, node)
        if not isinstance(layer, WEIGHTED_TYPES) or not unshared(node):
            continue
        user = single_user(node)
        if user is None or not is_module_input(node, user) or not unshared(user):
            continue
        bn = module_of(gm, user)
        if not _foldable_bn(bn) or bn.num_features != num_out_channels(layer):  # type: ignore[union-attr]
            continue
        assert bn is not None
        result.bn_stats[str(node.target)] = _bn_gamma_beta(bn)
        fold_bn_into_layer(layer, bn)
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        erased.add(user)
        delete_module(gm, str(user.target))
        result.folded.append((str(node.target), str(user.target)))

    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not _foldable_bn(bn) or not unshared(node):
            continue
        assert bn is not None
        user = single_user(node)
        layer = module_of(gm, user) if user is not None else None
        if (
            user is None
            or not is_module_input(node, user)
            or not unshared(user)
            or not isinstance(layer, (*CONV_TYPES, nn.Linear))
            or isinstance(layer, CONV_TRANSPOSE_TYPES)
            or not _no_padding(layer)
            or num_in_channels(layer) != bn.num_features  # type: ignore[union-attr]
        ):
            continue
        fold_bn_into_next_layer(bn, layer)
        user.args = (node.args[0], *user.args[1:])
        gm.graph.erase_node(node)
        delete_module(gm, str(node.target))
        result.folded_forward.append((str(node.target), str(user.target)))

    for node in gm.graph.nodes:
        bn = module_of(gm, node)
        if _foldable_bn(bn) and str(node.target) not in result.converted_to_affine:
            assert bn is not None
            convert_bn_to_affine(bn)
            result.converted_to_affine.append(str(node.target))

    gm.graph.lint()
    gm.recompile()
    return result


def unfoldable_weight_spec(spec: Any) -> str | None:
    """None when BN can fold into a weight quantizer of ``spec`` (a per-channel symmetric scale takes
    BN's per-channel factor exactly); else the spec's kind for the error message."""
    if spec.granularity == "per_channel" and spec.symmetric:
        return None
    return f"{spec.granularity}, {'symmetric' if spec.symmetric else 'asymmetric'}"


def fold_bn_into_quantizer_scale(sim: Any) -> list[tuple[str, str]]:
    """After QAT: fold each BN that directly follows a Conv/ConvTranspose/Linear of ``sim.model`` into that
    layer's weights *and* its weight quantizer's per-channel scale, so the trained grid is kept.

    With ``a = γ/σ`` per output channel: ``W' = W·a``, ``scale' = scale·|a|`` (the integer codes are
    unchanged; negative ``a`` flips their sign, which a symmetric grid represents except for its most
    negative code), ``b' = b·a + β − μ·a``; the BN's output quantizers move to the layer and the BN
    leaves the graph. ``sim.fp_model`` is not touched. Needs per-channel, symmetric weight quantizers
    (a per-tensor scale cannot absorb per-channel factors): other layers raise ConfigError.
    Returns the (layer, bn) pairs folded.
    """
    gm: fx.GraphModule = sim.model
    folded: list[tuple[str, str]] = []
    erased: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node in erased:
            continue
        layer = module_of(gm, node)
        if not isinstance(layer, WEIGHTED_TYPES):
            continue
        user = single_user(node)
        if user is None or not is_module_input(node, user):
            continue
        bn = module_of(gm, user)
        if not _foldable_bn(bn):
            continue
        assert bn is not None
        quantizer = dict(getattr(layer, "param_quantizers", {})).get("weight")
        a, c = _bn_affine(bn)
        if quantizer is not None and quantizer.enabled:
            kind = unfoldable_weight_spec(quantizer.spec)
            if kind is not None:
                raise ConfigError(
                    f"cannot fold {user.target} into the weight quantizer of {node.target}: it is {kind}; "
                    "folding into the scale needs per-channel symmetric weights (use fold_all_batch_norms "
                    "before QuantSim instead)"
                )
            with torch.no_grad():
                quantizer.scale.data.mul_(a.abs().to(quantizer.scale.device))
        with torch.no_grad():
            scale_out_channels(layer, a.to(layer.weight.device))  # type: ignore[union-attr]
            ensure_bias(layer).add_(c.to(layer.weight.device))  # type: ignore[union-attr]
        bn_outputs = getattr(bn, "output_quantizers", None)
        if bn_outputs is not None and hasattr(layer, "output_quantizers"):
            layer.output_quantizers = bn_outputs
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        erased.add(user)
        delete_module(gm, str(user.target))
        if hasattr(layer, "clear_param_cache"):
            layer.clear_param_cache()  # type: ignore[operator]
        folded.append((str(node.target), str(user.target)))
    gm.graph.lint()
    gm.recompile()
    return folded
