"""AdaRound's grid: the range it rounds on is the candidate with the lowest real output error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.ptq.adaround_grid import range_candidates, search_grid
from core.ptq.adaround_objectives import GramAccumulator
from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import fake_quantize


def _spread_conv(groups: int) -> nn.Conv2d:
    """A conv whose output channels' weight ranges are spread ~30× (as after BN folding on MobileNetV2)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
    with torch.no_grad():
        conv.weight.mul_(torch.logspace(-0.75, 0.75, 8).reshape(-1, 1, 1, 1))
    return conv


def _conv_errors(conv: nn.Conv2d, x_q: torch.Tensor, x_fp: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """Oracle: per output channel, Σ over samples and positions of (conv(x̃; Ŵ) − conv(x; W))²."""
    out = nn.functional.conv2d(x_q, w_hat, padding=1, groups=conv.groups)
    ref = nn.functional.conv2d(x_fp, conv.weight.detach(), padding=1, groups=conv.groups)
    return (out - ref).pow(2).sum((0, 2, 3))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("groups", [1, 8])
def test_the_chosen_range_has_the_lowest_conv_output_error_of_all_candidates(granularity, groups):
    conv = _spread_conv(groups)
    weight = conv.weight.detach()
    x_fp = torch.randn(32, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    x_q = x_fp + 0.05 * torch.randn(x_fp.shape, generator=torch.Generator().manual_seed(2))
    acc = GramAccumulator(conv)
    for a, b in zip(x_q.split(8), x_fp.split(8), strict=True):
        acc.add(a, b)
    objective = acc.objective(weight, torch.device("cpu"))
    spec = QuantSpec(bitwidth=4, symmetric=True, granularity=granularity, axis=0)
    lo = weight.amin((1, 2, 3)) if granularity == "per_channel" else weight.min().reshape(1)
    hi = weight.amax((1, 2, 3)) if granularity == "per_channel" else weight.max().reshape(1)
    sim_range = Encoding.from_min_max(lo, hi, bitwidth=4, symmetric=True, spec=spec)

    chosen = search_grid(objective, weight, sim_range, 20)

    errors = torch.stack(
        [
            _conv_errors(conv, x_q, x_fp, fake_quantize(weight, c))
            for c in range_candidates(sim_range, weight, 20)
        ]
    )
    mine = _conv_errors(conv, x_q, x_fp, fake_quantize(weight, chosen))
    if granularity == "per_tensor":
        assert float(mine.sum()) == pytest.approx(float(errors.sum(1).min()), rel=1e-4)
    else:
        torch.testing.assert_close(mine, errors.min(0).values, rtol=1e-4, atol=1e-6)
    # Spread ranges: min-max (the sim's range here) is not the best per-tensor grid.
    assert float(mine.sum()) < float(errors[0].sum())
