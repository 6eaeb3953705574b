"""Bias correction: the quantized layers' per-channel output means move back to the FP32 ones."""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from core.ptq.bias_correction import correct_bias
from core.ptq.bn_fold import fold_all_batch_norms
from core.quantsim import QuantSim
from tests.core.ptq.tiny_models import randomize_bn


def _model() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 1),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 4, 1),
        )
    )


def _mean_shift(sim: QuantSim, x: torch.Tensor) -> float:
    """|E[sim output] − E[fp output]| per channel, summed."""
    with torch.no_grad():
        return float((sim.model(x) - sim.fp_model(x)).mean((0, 2, 3)).abs().sum())


def _sim(model: nn.Module, x: torch.Tensor) -> QuantSim:
    sim = QuantSim(model, (x[:1],), param_bw=4, output_bw=8, per_channel=False)
    sim.compute_encodings(x.split(64))
    return sim


def test_empirical_bias_correction_removes_the_mean_shift():
    x = torch.randn(64, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    sim = _sim(_model(), x)
    before = _mean_shift(sim, x)
    result = correct_bias(sim, x.split(16))
    assert result.empirical == ["0", "3", "6"]
    assert _mean_shift(sim, x) < 0.2 * before


def test_analytical_bias_correction_uses_folded_bn_statistics():
    """Given a BN-folded model whose BN statistics match the data, analytical correction (no data for the
    layers after a BN) reduces the output mean shift too."""
    x = torch.randn(256, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    model = _model()
    with torch.no_grad():  # make the BN statistics true for this data
        for i in (0, 3):
            model[i + 1].train()
            model[: i + 2](x)
            model[i + 1].eval()
    gm = fx.symbolic_trace(copy.deepcopy(model))
    folded = fold_all_batch_norms(gm)
    sim = _sim(gm, x)
    before = _mean_shift(sim, x)
    result = correct_bias(sim, x.split(64), method="analytical", bn_stats=folded.bn_stats)
    assert result.analytical == ["3", "6"] and result.empirical == ["0"]
    assert _mean_shift(sim, x) < 0.5 * before
