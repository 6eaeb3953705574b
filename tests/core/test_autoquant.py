"""AutoQuant: stops at the first stage meeting the target, explains unreachable targets, resumes from cache."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from core.autoquant import autoquant
from core.errors import CancelledError
from core.ptq.adaround import AdaroundConfig
from tests.core.ptq.tiny_models import randomize_bn

FAST_ADA = AdaroundConfig(num_iterations=60, num_samples=64)
ONE_SCHEME = (("min_max", "min_max"),)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 6, 1),
            nn.Flatten(),
            nn.Linear(6 * 5 * 5, 4),
        )
    )


def _data() -> torch.Tensor:
    return torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))


def test_stops_at_first_stage_that_meets_the_target_and_writes_reports(tmp_path):
    stages_seen: list[str] = []
    result = autoquant(
        _model(),
        _data(),
        allowed_accuracy_drop=0.05,
        scheme_candidates=ONE_SCHEME,
        out_dir=tmp_path,
        progress=lambda stage, f: stages_seen.append(stage),
    )
    assert result.target_met and result.best_stage == "bn_fold"
    assert [s.name for s in result.stages] == ["prepare", "scheme_selection", "w32_check", "bn_fold"]
    assert "cle" not in stages_seen
    report = json.loads((tmp_path / "autoquant_report.json").read_text())
    assert report["best_stage"] == "bn_fold" and report["stages"][-1]["status"] == "met"
    assert "<svg" in (tmp_path / "autoquant_report.html").read_text()
    assert (tmp_path / "model.encodings").is_file()


def test_unreachable_target_stops_after_the_float_weight_check():
    result = autoquant(
        _model(), _data(), allowed_accuracy_drop=0.0, output_bw=4, scheme_candidates=ONE_SCHEME
    )
    assert not result.reachable and result.sim is None
    assert [s.name for s in result.stages][-1] == "w32_check"
    assert "quantization-aware training" in result.message


def test_resumes_from_its_cache_after_a_cancelled_run(tmp_path):
    """Given 2-bit weights (no PTQ stage reaches the target, A8 does), When the first run is cancelled
    inside AdaRound and the same run is repeated, Then finished stages come from the cache."""
    kwargs = dict(
        allowed_accuracy_drop=0.002,
        param_bw=2,
        scheme_candidates=ONE_SCHEME,
        adaround=FAST_ADA,
        cache_dir=tmp_path / "cache",
    )
    calls = {"n": 0}

    def cancel_in_adaround() -> bool:
        calls["n"] += 1
        return current["stage"] == "adaround"

    current = {"stage": ""}
    with pytest.raises(CancelledError):
        autoquant(
            _model(),
            _data(),
            progress=lambda s, f: current.update(stage=s),
            cancel=cancel_in_adaround,
            **kwargs,
        )
    result = autoquant(_model(), _data(), **kwargs)
    cached = {s.name: s.cached for s in result.stages}
    assert cached["scheme_selection"] and cached["w32_check"] and cached["bn_fold"] and cached["cle"]
    assert cached["seq_mse"]
    assert not cached["adaround"]
    assert [s.name for s in result.stages][3:7] == ["bn_fold", "cle", "seq_mse", "adaround"]
    again = autoquant(_model(), _data(), **kwargs)
    assert all(s.cached for s in again.stages if s.name != "prepare")
    assert again.best_score == pytest.approx(result.best_score, abs=1e-6)
    # Each stage has its own key: new AdaRound settings re-run AdaRound (and what follows) only.
    changed = autoquant(
        _model(), _data(), **{**kwargs, "adaround": AdaroundConfig(num_iterations=30, num_samples=64)}
    )
    cached = {s.name: s.cached for s in changed.stages}
    assert all(cached[n] for n in ("scheme_selection", "w32_check", "bn_fold", "cle", "seq_mse"))
    assert not cached["adaround"] and not cached["mixed_precision"]


def test_mixed_precision_raises_the_most_sensitive_modules_until_the_target_is_met(tmp_path):
    """Given 2-bit weights that no PTQ stage rescues (SeqMSE reaches 0.995 of the 0.998 target, AdaRound
    less; A8 alone would meet it), When AutoQuant reaches its mixed-precision stage, Then it raises modules in order of
    measured sensitivity, stops once the target is met, and the returned sim holds exactly those modules
    at the raised bitwidth and the others at 2 bits."""
    result = autoquant(
        _model(),
        _data(),
        allowed_accuracy_drop=0.002,
        param_bw=2,
        scheme_candidates=ONE_SCHEME,
        adaround=FAST_ADA,
        mixed_precision_bw=(8, 8),
        export=False,
        out_dir=tmp_path,
    )
    names = [s.name for s in result.stages]
    assert names[-1] == "mixed_precision", names
    below = {s.name: s for s in result.stages if s.name in ("bn_fold", "cle", "seq_mse", "adaround")}
    assert below and all(s.status == "below" for s in below.values())
    mixed = result.stages[-1]
    raised, gains = mixed.details["raised"], mixed.details["sensitivity"]
    assert raised, "no module was raised"
    # Raised in decreasing order of the gain measured by leaving each module unquantized.
    assert raised == sorted(raised, key=lambda n: gains[n], reverse=True)
    assert result.target_met and mixed.status == "met" and result.best_stage == "mixed_precision"
    # The Pareto curve: each accepted raise costs BitOps and never lowers the score.
    pareto = mixed.details["pareto"]
    assert [p["raised"] for p in pareto[1:]] == raised
    bitops, scores = [p["relative_bitops"] for p in pareto], [p["score"] for p in pareto]
    assert all(b < c for b, c in itertools.pairwise(bitops)) and bitops[0] > 0 and bitops[-1] <= 1.0
    assert all(a <= b for a, b in itertools.pairwise(scores)) and scores[-1] == pytest.approx(mixed.score)
    assert "Pareto curve" in (tmp_path / "autoquant_report.html").read_text()
    assert mixed.score >= result.target > max(s.score for s in below.values())
    weight_bits = {
        name: {
            q.spec.bitwidth
            for role, q in module.quantizers().items()
            if role.startswith("param.") and q.enabled
        }
        for name, module in result.sim.quantized_modules().items()
    }
    for name, bits in weight_bits.items():
        if bits:
            assert bits == ({8} if name in raised else {2}), (name, bits)
    # It stopped at the target: here that leaves some weight-bearing modules at 2 bits.
    assert len(raised) < sum(1 for bits in weight_bits.values() if bits)


def test_per_tensor_run_falls_back_to_per_channel_weights_only_where_the_config_allows_them():
    """Given 2-bit per-tensor weights that no PTQ stage rescues, When the config (the default preset)
    puts weights per channel, Then a per_channel stage follows AdaRound, before mixed precision, and its
    sim's weights are per channel; When the config is per-tensor only, Then no such stage runs."""
    kwargs = dict(
        allowed_accuracy_drop=0.002,
        param_bw=2,
        per_channel=False,
        scheme_candidates=ONE_SCHEME,
        adaround=AdaroundConfig(num_iterations=20, num_samples=64),
        mixed_precision=False,
    )
    result = autoquant(_model(), _data(), **kwargs)
    names = [s.name for s in result.stages]
    assert names[names.index("adaround") + 1] == "per_channel", names
    fallback = result.stages[-1]
    assert fallback.details["adaround"] == (fallback.details["nearest_score"] < result.target)
    assert result.best_stage == "per_channel"  # 2-bit weights: per channel beats every per-tensor stage
    weights = [q for k, q in result.sim.param_quantizers().items() if k.endswith(".weight") and q.enabled]
    assert weights and all(q.spec.granularity == "per_channel" for q in weights)
    per_tensor_only = {"defaults": {"ops": {}, "params": {"is_quantized": "True", "is_symmetric": "True"},
                                    "per_channel_quantization": "False"}, "params": {}, "op_type": {},
                       "supergroups": [], "model_input": {}, "model_output": {}}  # fmt: skip
    strict = autoquant(_model(), _data(), config=per_tensor_only, **kwargs)
    strict_names = [s.name for s in strict.stages]
    assert not strict.target_met and "adaround" in strict_names and "per_channel" not in strict_names
