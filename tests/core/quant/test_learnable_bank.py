"""Pooled range learning: one shared scale/zero-point bank gives the per-quantizer gradients, updates and
state dicts of quantizers that own their parameters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
from torch import nn

from core.qat import finish_qat, prepare_qat
from core.quant import Quantizer
from core.quant.learnable import LearnableQuantizer
from core.quant.learnable_bank import (
    LsqParameterBank,
    PooledLearnableQuantizer,
    unpool_learnable_quantizers,
)
from core.quantsim import QuantSim
from tests.core.qat_scenarios import build_sim


def _pair(per_channel: bool = False) -> tuple[QuantSim, QuantSim, torch.Tensor, torch.Tensor]:
    """A range-learning sim (pooled, as prepare_qat leaves it) and an unpooled deep copy of it."""
    sim, x, labels = build_sim(bn=True)
    if per_channel:
        sim = QuantSim(
            torch.fx.symbolic_trace(sim.fp_model),
            (x[:2],),
            prepared=True,
            param_bw=4,
            output_bw=8,
            per_channel=True,
        )
        sim.compute_encodings([x[:32]])
    prepare_qat(sim, "range_learning")
    twin = copy.deepcopy(sim)
    unpool_learnable_quantizers(twin.model)
    return sim, twin, x, labels


def _banks(model: nn.Module) -> list[LsqParameterBank]:
    return list({id(m): m for m in model.modules() if isinstance(m, LsqParameterBank)}.values())


@pytest.mark.parametrize("per_channel", [False, True])
def test_pooled_gradients_equal_the_per_quantizer_ones(per_channel):
    """Given a pooled sim and its unpooled twin, when one batch is backpropagated through both, then every
    quantizer's scale and zero-point gradient (LSQ gradient scale included) is the same."""
    sim, twin, x, labels = _pair(per_channel)
    (bank,) = _banks(sim.model)
    assert _banks(twin.model) == []
    learned = [p for n, p in sim.model.named_parameters() if "quantizers" in n]
    assert learned == [bank.scale, bank.zero_point]  # two parameters, found by model.parameters()
    for model in (sim.model, twin.model):
        nn.functional.cross_entropy(model(x[:32]), labels[:32]).backward()
    pooled, own = sim.quantizers(), twin.quantizers()
    assert pooled.keys() == own.keys()
    for key, q in pooled.items():
        mine = own[key]
        assert isinstance(q, PooledLearnableQuantizer) and type(mine) is LearnableQuantizer, key
        assert q.scale_grad is not None and torch.count_nonzero(q.scale_grad) > 0, key
        torch.testing.assert_close(q.scale_grad, mine.scale.grad, rtol=1e-6, atol=1e-9, msg=key)
        if mine.zero_point.requires_grad:
            torch.testing.assert_close(q.zero_point_grad, mine.zero_point.grad, rtol=1e-6, atol=1e-9, msg=key)
        else:
            assert q.zero_point_grad is None and not q.zero_point.requires_grad, key
    # The weights' gradients do not depend on where the scales live.
    for (name, a), b in zip(
        ((n, p) for n, p in sim.model.named_parameters() if "quantizers" not in n),
        (p for n, p in twin.model.named_parameters() if "quantizers" not in n),
        strict=True,
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9, msg=name)


def test_an_optimizer_over_model_parameters_trains_the_bank_like_the_own_parameters():
    sim, twin, x, labels = _pair()
    initial = {k: q.scale.detach().clone() for k, q in sim.quantizers().items()}
    for model in (sim.model, twin.model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for i in range(3):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(
                model(x[i * 32 : (i + 1) * 32]), labels[i * 32 : (i + 1) * 32]
            ).backward()
            opt.step()
    for key, q in sim.quantizers().items():
        mine = twin.quantizers()[key]
        assert not torch.equal(q.scale.detach(), initial[key]), key  # trained
        torch.testing.assert_close(q.scale.detach(), mine.scale.detach(), rtol=1e-5, atol=1e-8, msg=key)
        torch.testing.assert_close(
            q.zero_point.detach(), mine.zero_point.detach(), rtol=1e-5, atol=1e-6, msg=key
        )
    before = {k: q.encoding for k, q in sim.quantizers().items()}
    finish_qat(sim)  # baked from the bank's current values
    assert _banks(sim.model) == []
    for key, q in sim.quantizers().items():
        assert type(q) is Quantizer and q.encoding.equals(before[key]), key


def test_state_dict_keys_and_values_are_those_of_unpooled_quantizers_and_load_both_ways():
    sim, twin, x, labels = _pair()
    pooled_state, own_state = sim.model.state_dict(), twin.model.state_dict()
    assert list(pooled_state) == list(own_state)
    for key in own_state:
        assert torch.equal(pooled_state[key], own_state[key]), key
    # Train the twin a little, then load its state into the pooled sim: the values land in the bank.
    opt = torch.optim.SGD(twin.model.parameters(), lr=0.5)
    nn.functional.cross_entropy(twin.model(x[:32]), labels[:32]).backward()
    opt.step()
    sim.model.load_state_dict(twin.model.state_dict(), strict=True)
    for key, q in sim.quantizers().items():
        assert torch.equal(q.scale, twin.quantizers()[key].scale.detach()), key
    (bank,) = _banks(sim.model)
    assert torch.equal(
        bank.scale.detach(), torch.cat([q.scale.detach().reshape(-1) for q in twin.quantizers().values()])
    )
    # A wrongly shaped entry is reported, not silently broadcast.
    state = sim.model.state_dict()
    key = next(k for k in state if k.endswith(".scale"))
    state[key] = torch.ones(3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        sim.model.load_state_dict(state)
    del state[key]
    with pytest.raises(RuntimeError, match="Missing key"):
        sim.model.load_state_dict(state)


def test_a_deep_copy_trains_its_own_bank():
    """Given a pooled sim and a deep copy, when the copy trains, then the original's scales do not move
    (the copy's quantizers read the copy's bank, not cached views of the original's memory)."""
    sim, _, x, labels = _pair()
    original = {k: q.scale.detach().clone() for k, q in sim.quantizers().items()}
    nn.functional.cross_entropy(sim.model(x[:8]), labels[:8]).backward()  # fills the host-value cache
    clone = copy.deepcopy(sim)
    (bank,) = _banks(clone.model)
    assert bank is not _banks(sim.model)[0]
    assert all(q.lsq_bank is bank for q in clone.quantizers().values())  # type: ignore[union-attr]
    opt = torch.optim.SGD(clone.model.parameters(), lr=1.0)
    for _ in range(2):
        opt.zero_grad()
        out = clone.model(x[:32])
        nn.functional.cross_entropy(out, labels[:32]).backward()
        opt.step()
    for key, q in sim.quantizers().items():
        assert torch.equal(q.scale.detach(), original[key]), key
    assert any(not torch.equal(q.scale.detach(), original[k]) for k, q in clone.quantizers().items())
    # The copy's training forward reads its own trained values: equal to its unpooled copy's.
    unpooled = copy.deepcopy(clone)
    unpool_learnable_quantizers(unpooled.model)
    assert torch.equal(clone.model(x[:8]), unpooled.model(x[:8]))
    assert not torch.equal(clone.model(x[:8]), sim.model(x[:8]))
