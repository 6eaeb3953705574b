"""The Gram objective's patch layout reproduces the convolution, and its loss equals the sampled error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.ptq.adaround_objectives import GramAccumulator, patches


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(6, 4, 3, padding=1, groups=2), (2, 6, 7, 7)),
        (nn.Conv2d(6, 6, 3, padding=2, dilation=2, stride=2, groups=6), (2, 6, 9, 8)),
        (nn.Conv1d(4, 4, 3, padding=1), (2, 4, 10)),
        (nn.Conv2d(4, 8, (1, 3), stride=(2, 1)), (3, 4, 6, 6)),
    ],
)
def test_patches_times_weight_is_the_convolution(module, shape):
    x = torch.randn(*shape)
    expected = module(x)
    cols = patches(module, x)
    groups = cols.shape[0]
    w = module.weight.detach().reshape(groups, -1, cols.shape[1])
    out = torch.bmm(w, cols).reshape(expected.shape[1], shape[0], -1).permute(1, 0, 2)
    out = out.reshape(expected.shape) + module.bias.detach().reshape(1, -1, *([1] * (expected.dim() - 2)))
    torch.testing.assert_close(out, expected.detach(), rtol=1e-4, atol=1e-5)


def test_gram_loss_equals_the_direct_reconstruction_error():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    x_fp = torch.randn(16, 3, 6, 6)
    x_q = x_fp + 0.05 * torch.randn_like(x_fp)
    acc = GramAccumulator(conv)
    for a, b in zip(x_q.split(4), x_fp.split(4), strict=True):
        acc.add(a, b)
    objective = acc.objective(conv.weight.detach(), torch.device("cpu"))
    w_hat = conv.weight.detach() + 0.01 * torch.randn_like(conv.weight)
    direct = (
        (
            nn.functional.conv2d(x_q, w_hat, padding=1)
            - nn.functional.conv2d(x_fp, conv.weight.detach(), padding=1)
        )
        .pow(2)
        .sum(1)
        .mean()
    )
    assert float(objective.loss(w_hat)) == pytest.approx(float(direct), rel=1e-3)
