"""BN re-estimation: statistics become the mean of per-batch statistics; remove() undoes it."""

from __future__ import annotations

import torch
from torch import nn

from core.ptq.bn_reestimation import reestimate_bn_stats


def test_reestimation_averages_batch_stats_and_is_undoable():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    old_mean = model[1].running_mean.clone()
    batches = [torch.randn(8, 2, 3, 3) * 3 + 1 for _ in range(4)]
    handle = reestimate_bn_stats(model, batches, num_batches=4)
    with torch.no_grad():
        per_batch = torch.stack([model[0](b).mean((0, 2, 3)) for b in batches])
    torch.testing.assert_close(model[1].running_mean, per_batch.mean(0), rtol=1e-5, atol=1e-5)
    assert not model.training and not model[1].training and model[1].momentum == 0.1
    assert handle.layers == ["1"]
    handle.remove()
    torch.testing.assert_close(model[1].running_mean, old_mean)


def test_uses_at_most_num_batches():
    model = nn.Sequential(nn.BatchNorm1d(3)).eval()
    batches = [torch.full((4, 3), float(i)) for i in range(5)]
    reestimate_bn_stats(model, batches, num_batches=2, batch_size=4)
    torch.testing.assert_close(model[0].running_mean, torch.full((3,), 0.5))
