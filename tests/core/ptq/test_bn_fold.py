"""BN folding: the folded model computes what the original did (relative error ≤ 1e-5)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from core.ptq.bn_fold import fold_all_batch_norms
from tests.core.ptq.tiny_models import (
    conv_chain,
    depthwise_triplet,
    randomize_bn,
    relative_error,
    residual_block,
)

TOL = 1e-5


def _check(model: nn.Module, x: torch.Tensor):
    reference = model(x)
    gm = fx.symbolic_trace(copy.deepcopy(model))
    result = fold_all_batch_norms(gm)
    assert relative_error(result.model(x), reference) <= TOL
    return result


@pytest.mark.parametrize(
    "build, n_bn",
    [(conv_chain, 4), (depthwise_triplet, 3), (residual_block, 3)],
)
def test_backward_fold_removes_every_bn_and_keeps_output(build, n_bn):
    result = _check(build(), torch.randn(4, 3 if build is not depthwise_triplet else 4, 6, 6))
    assert len(result.folded) == n_bn
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in result.model.modules())
    assert set(result.bn_stats) == {layer for layer, _ in result.folded}


def test_conv_transpose_backward_fold_with_groups():
    model = randomize_bn(nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6)))
    result = _check(model, torch.randn(2, 4, 5, 5))
    assert result.folded == [("0", "1")]


def test_forward_fold_into_unpadded_conv_and_affine_for_padded():
    """Given BN → Conv(no padding) and BN → Conv(padding=1) with no layer before them,
    When folding, Then the first folds forward and the second becomes an affine BN; output unchanged."""

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn_a = nn.BatchNorm2d(3)
            self.conv_a = nn.Conv2d(3, 5, 3)
            self.bn_b = nn.BatchNorm2d(5)
            self.conv_b = nn.Conv2d(5, 4, 3, padding=1)

        def forward(self, x):
            return self.conv_b(self.bn_b(torch.relu(self.conv_a(self.bn_a(x)))))

    result = _check(randomize_bn(Model()), torch.randn(2, 3, 8, 8))
    assert result.folded_forward == [("bn_a", "conv_a")]
    assert result.converted_to_affine == ["bn_b"]
    bn_b = result.model.get_submodule("bn_b")
    assert torch.all(bn_b.running_mean == 0)


def test_bn_read_twice_is_not_folded_but_converted():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    result = _check(randomize_bn(Model()), torch.randn(2, 3, 4, 4))
    assert result.folded == [] and result.converted_to_affine == ["bn"]


def test_fold_into_quantizer_scale_keeps_the_quantized_output():
    """Given a calibrated sim with per-channel weights and a Conv → BN (positive γ), When folding the BN into
    the weight quantizer's scale, Then the sim computes the same outputs and has no BN left."""
    from core.ptq.bn_fold import fold_bn_into_quantizer_scale
    from core.quantsim import QuantSim

    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1)))
    model[1].weight.data.abs_().add_(0.1)
    x = torch.randn(8, 3, 6, 6)
    sim = QuantSim(model, (x[:1],), param_bw=4, output_bw=8, per_channel=True)
    sim.compute_encodings([x])
    before = sim.model(x)
    assert fold_bn_into_quantizer_scale(sim) == [("0", "1")]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sim.model.modules())
    assert relative_error(sim.model(x), before) <= 1e-5


def test_fold_into_quantizer_scale_refuses_per_tensor_weights():
    from core.errors import ConfigError
    from core.ptq.bn_fold import fold_bn_into_quantizer_scale
    from core.quantsim import QuantSim

    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)))
    x = torch.randn(2, 3, 6, 6)
    sim = QuantSim(model, (x[:1],), per_channel=False)
    sim.compute_encodings([x])
    with pytest.raises(ConfigError, match="per-channel"):
        fold_bn_into_quantizer_scale(sim)
