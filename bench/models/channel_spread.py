"""The MobileNet-style digits net made hard the way ImageNet MobileNetV2 is: per-channel weight ranges
spread 10–30× after BN folding (Nagel et al. 2019, fig. 2), with the network's function kept.

The trained digits net comes out of training with folded ranges spread only 2–10×, so per-tensor weight
quantization is easy on it and says little about ImageNet models. ``spread_channel_ranges`` rescales
channels without changing what the network computes:

* across ``BN → ReLU6 → conv``: BN channel c (γ_c, β_c) times ``s_c``, the next conv's input channel c
  divided by ``s_c``. ReLU6 commutes with the scale wherever it does not clip at 6:
  ``relu6(s·x)/s = clip(x, 0, 6/s)``, equal to ``relu6(x)`` for every x ≤ min(6, 6/s). So ``s_c`` is
  chosen per channel against the channel's largest pre-activation ``m_c`` over all the bench's data
  (calibration and evaluation): ``s_c ≤ 6·margin/m_c``, and ``s_c < 1`` only where ``m_c ≤ 6·margin``;
  a channel that saturates keeps ``s_c = 1``. Exact on the bench's data, verified after the edit.
* across the residual streams (projection BN → add → next expand convs / head): every producer's BN
  channel c times ``s_c``, every reader's input channel c divided by it — exact (no activation).

Through BN folding, a factor on a BN's channel lands on the folded weights of the layer before it (its
output channel c) and the division on the layer after (a depthwise conv's output channel c), which is
what spreads the per-channel ranges. ``factors`` are log-uniform in ``[ratio^-1/2, ratio^1/2]``.

>>> bundle = build_spread_mobilenet_digits(seed=0)                # doctest: +SKIP
>>> folded_channel_spread(bundle.model, bundle.calib[:1])         # doctest: +SKIP
{'stem.0': 10.4, 'blocks.0.block.0': 18.7, ...}
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.models.mobilenet_digits import (
    MobileNetDigits,
    MobileNetDigitsBundle,
    build_trained_mobilenet_digits,
)

RATIO = 10.0
DEPTHWISE_RATIO = 4.0
MARGIN = 0.9  # headroom below the clip bound for inputs a little beyond the bench's data
MAX_RELATIVE_ERROR = 1e-4


def _bn_channel_max(model: nn.Module, bns: list[nn.BatchNorm2d], data: torch.Tensor) -> list[torch.Tensor]:
    maxima = [torch.full((bn.num_features,), -float("inf")) for bn in bns]
    hooks = []
    for i, bn in enumerate(bns):

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, i: int = i) -> None:
            maxima[i] = torch.maximum(maxima[i], out.detach().amax(dim=(0, 2, 3)))

        hooks.append(bn.register_forward_hook(hook))
    with torch.no_grad():
        for chunk in data.split(256):
            model(chunk)
    for h in hooks:
        h.remove()
    return maxima


def _scale_bn(bn: nn.BatchNorm2d, s: torch.Tensor) -> None:
    with torch.no_grad():
        bn.weight.mul_(s)
        bn.bias.mul_(s)


def _divide_inputs(conv: nn.Conv2d | nn.Linear, s: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(conv, nn.Conv2d) and conv.groups == conv.in_channels:  # depthwise
            conv.weight.div_(s.reshape(-1, 1, 1, 1))
        elif isinstance(conv, nn.Conv2d):
            conv.weight.div_(s.reshape(1, -1, 1, 1))
        else:
            conv.weight.div_(s.reshape(1, -1))


def _relu6_safe(target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bound = 6.0 * MARGIN
    up = torch.minimum(target, bound / m.clamp_min(1e-12))  # s·m must stay below the clip
    s = torch.where(target >= 1.0, up.clamp_min(1.0), target)
    return torch.where(m > bound, torch.ones_like(s), s)  # a saturating channel cannot move


def spread_channel_ranges(
    model: MobileNetDigits, data: torch.Tensor, ratio: float = RATIO, seed: int = 0
) -> MobileNetDigits:
    """A copy of ``model`` computing the same outputs on ``data`` with folded per-channel weight ranges
    spread about ``ratio``-fold more (see the module docstring). Raises RuntimeError when the outputs
    moved by more than 1e-4 relative on ``data``."""
    out = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(seed)

    def factors(n: int, r: float = ratio) -> torch.Tensor:
        return torch.exp((torch.rand(n, generator=gen) - 0.5) * torch.log(torch.tensor(r)))

    # (BN, the layer reading its ReLU6 output, the link whose factors this one follows): a depthwise
    # BN's factors follow its expand BN's, so the depthwise weights (divided by the one, multiplied by
    # the other) spread by the extra factor only, as ImageNet's do, not by the product of both.
    links: list[tuple[nn.BatchNorm2d, nn.Module, int | None]] = []
    for block in out.blocks:
        seq = block.block
        links += [(seq[1], seq[3], None), (seq[4], seq[6], len(links))]
    links.append((out.head[1], out.fc, None))  # head BN → ReLU6 → average pool → fc
    maxima = _bn_channel_max(out, [bn for bn, _, _ in links], data)
    applied: list[torch.Tensor] = []
    for (bn, reader, follows), m in zip(links, maxima, strict=True):
        target = factors(bn.num_features)
        if follows is not None:
            target = applied[follows] * factors(bn.num_features, DEPTHWISE_RATIO)
        s = _relu6_safe(target, m)
        _scale_bn(bn, s)
        _divide_inputs(reader, s)  # type: ignore[arg-type]
        applied.append(s)
    streams = (
        ([out.blocks[1].block[7], out.blocks[2].block[7]], [out.blocks[2].block[0], out.blocks[3].block[0]]),
        ([out.blocks[3].block[7], out.blocks[4].block[7]], [out.blocks[4].block[0], out.head[0]]),
    )
    for producers, readers in streams:
        s = factors(producers[0].num_features)
        for bn in producers:
            _scale_bn(bn, s)
        for conv in readers:
            _divide_inputs(conv, s)
    with torch.no_grad():
        ref, new = model(data), out(data)
    err = float((new - ref).norm() / ref.norm())
    if err > MAX_RELATIVE_ERROR:
        raise RuntimeError(f"channel spreading changed the outputs (relative error {err:.2e})")
    return out


def folded_channel_spread(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Per layer, max/min of the per-output-channel |W| ranges after BN folding."""
    from core.graph import prepare_model
    from core.ptq.bn_fold import fold_all_batch_norms

    gm = prepare_model(copy.deepcopy(model), (example,))
    fold_all_batch_norms(gm)
    spread: dict[str, float] = {}
    for name, m in gm.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            r = m.weight.detach().abs().flatten(1).amax(1)
            spread[name] = float(r.max() / r.min().clamp_min(1e-12))
    return spread


def build_spread_mobilenet_digits(seed: int = 0) -> MobileNetDigitsBundle:
    """The trained digits net (bench/models/mobilenet_digits.py) with its channel ranges spread, verified
    equal on its calibration and evaluation data."""
    bundle = build_trained_mobilenet_digits(seed)
    data = torch.cat([bundle.calib, bundle.eval[0]])
    return MobileNetDigitsBundle(
        spread_channel_ranges(bundle.model, data, seed=seed), bundle.calib, bundle.eval
    )
