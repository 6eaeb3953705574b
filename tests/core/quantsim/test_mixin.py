"""Quantized modules' train()/eval(): the shortcut through the quantizer containers sets what nn.Module's
walk sets, and an original class's own train() still runs."""

from __future__ import annotations

from torch import nn

from core.qat import prepare_qat
from core.quant import Quantizer, QuantSpec
from core.quantsim.mixin import quantize_module_in_place
from tests.core.qat_scenarios import build_sim


def _flags(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules(remove_duplicate=False)}


def test_train_and_eval_reach_every_module_including_quantizers_and_the_shared_bank():
    sim, _, _ = build_sim(bn=True)
    prepare_qat(sim, "range_learning")  # adds the shared LSQ bank under every learned quantizer
    sim.model.eval()
    flags = _flags(sim.model)
    assert any(".lsq_bank" in n for n in flags) and any("quantizers" in n for n in flags)
    assert not any(flags.values())
    sim.model.train()
    assert all(_flags(sim.model).values())
    # A quantizer switched off on its own is switched back by its model, as nn.Module.train does.
    q = next(iter(sim.quantizers().values()))
    q.eval()
    sim.model.train()
    assert q.training
    sim.model.train(False)
    assert not any(_flags(sim.model).values())


class _FrozenStatsBN(nn.BatchNorm2d):
    """A user's BN that keeps its running statistics fixed: always in eval mode."""

    def train(self, mode: bool = True) -> _FrozenStatsBN:
        super().train(False)
        return self


class _CountingQuantizer(Quantizer):
    calls = 0

    def train(self, mode: bool = True) -> _CountingQuantizer:
        type(self).calls += 1
        return super().train(mode)


def test_an_original_classs_own_train_and_a_quantizers_own_train_still_run():
    bn = _FrozenStatsBN(4)
    quantize_module_in_place(bn, "BatchNormalization", [None], [_CountingQuantizer(QuantSpec())], {})
    conv = nn.Conv2d(1, 4, 1)
    quantize_module_in_place(conv, "Conv", [_CountingQuantizer(QuantSpec())], [None], {"weight": None})
    model = nn.Sequential(conv, bn)
    model.train()
    assert conv.training and not bn.training and not bn.output_quantizers[0].training
    assert conv.input_quantizers[0].training
    assert _CountingQuantizer.calls == 2
