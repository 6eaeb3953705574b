"""QAT: regular and range-learning gradients, weight grids following weights, the built-in loop,
checkpoint → SIGKILL → resume, and DDP over 2 gloo processes."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.fx
from safetensors.torch import load_file
from torch import nn

from core.errors import CancelledError, ConfigError
from core.qat import finish_qat, list_checkpoints, lr_at, prepare_qat, qat
from core.qat.fused_activations import unfuse_activations
from core.quant import Encoding, Quantizer
from core.quant.grouping import as_groups
from core.quant.learnable import LearnableQuantizer
from core.quantsim import QuantSim
from core.quantsim.mixin import quantized_class
from tests.core.qat_scenarios import build_sim

ROOT = Path(__file__).resolve().parents[2]


def _sqnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    noise = (reference - test).pow(2).mean()
    return float(10 * torch.log10(reference.pow(2).mean() / noise))


def _toy_sim(weight: float, act_range: float) -> QuantSim:
    """y = w·x through one Linear(1, 1), 8-bit, activations calibrated on [-act_range, act_range]."""
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(weight)
    sim = QuantSim(torch.fx.symbolic_trace(nn.Sequential(layer)), (torch.zeros(1, 1),), prepared=True)
    sim.compute_encodings([torch.linspace(-act_range, act_range, 64).reshape(-1, 1)])
    return sim


def test_regular_gradients_reach_weights_with_the_expected_sign_and_activation_grids_stay():
    """Given y = w·x with w = 1 and target 2·x, the MSE gradient on w is negative; activation
    quantizers own no trainable tensors in regular mode."""
    sim = _toy_sim(1.0, 1.0)
    prepare_qat(sim, "regular")
    x = torch.linspace(-0.5, 0.5, 32).reshape(-1, 1)
    (sim(x) - 2 * x).pow(2).mean().backward()
    weight = sim.model.get_submodule("0").weight
    assert weight.grad is not None and float(weight.grad) < 0
    assert all(not p.requires_grad for q in sim.activation_quantizers().values() for p in q.parameters())
    assert all(not t.requires_grad for q in sim.quantizers().values() for t in (q.scale, q.zero_point))
    finish_qat(sim)


def test_weight_encodings_follow_weights_after_each_step_of_a_user_loop():
    sim, x, labels = build_sim(bn=False)
    prepare_qat(sim, "regular")
    act_before = {k: q.encoding for k, q in sim.activation_quantizers().items()}
    opt = torch.optim.SGD(sim.model.parameters(), lr=0.5)
    for i in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(sim(x[i * 16 : (i + 1) * 16]), labels[i * 16 : (i + 1) * 16]).backward()
        opt.step()  # no explicit compute_param_encodings: prepare_qat's hook runs it
        for key, q in sim.param_quantizers().items():
            module, _, pname = key.rpartition(".param.")
            fresh = Quantizer(q.spec, scheme=q.scheme, scheme_options=q.scheme_options)
            fresh.compute_encoding_from(getattr(sim.model.get_submodule(module), pname).detach())
            assert q.encoding.equals(fresh.encoding), key
    for key, q in sim.activation_quantizers().items():
        assert q.encoding.equals(act_before[key]), key
    # An optimizer over unrelated parameters does not touch this sim.
    other = nn.Linear(2, 2)
    before = {k: q.encoding for k, q in sim.param_quantizers().items()}
    with torch.no_grad():
        sim.model.get_submodule("0").weight.mul_(3)
    torch.optim.SGD(other.parameters(), lr=0.1).step()
    assert sim.param_quantizers()["0.param.weight"].encoding.equals(before["0.param.weight"])
    finish_qat(sim)


def test_range_learning_gradients_reach_scales_with_the_expected_sign():
    """Given activations calibrated on [-1, 1] but inputs spread over [-4, 4], distilling from FP32
    asks the clipping input quantizer for a larger scale (negative gradient)."""
    sim = _toy_sim(1.0, 1.0)
    setup = prepare_qat(sim, "range_learning")
    assert set(setup.learned) == set(sim.quantizers())
    x = torch.linspace(-4, 4, 256).reshape(-1, 1)
    (sim(x) - sim.fp_model(x)).pow(2).mean().backward()
    q_in = sim.quantizers()["0.input.0"]
    # Learned scales live in one shared bank while training (core/quant/learnable_bank.py): read each
    # quantizer's gradient at its slice.
    assert isinstance(q_in, LearnableQuantizer) and float(q_in.scale_grad) < 0
    assert float(sim.quantizers()["0.param.weight"].scale_grad) != 0
    finish_qat(sim)
    assert all(type(q) is Quantizer and q.zero_point.dtype == torch.int32 for q in sim.quantizers().values())


@pytest.mark.parametrize("mode", ["regular", "range_learning"])
def test_label_free_qat_moves_the_quantized_model_towards_fp32(mode):
    sim, x, _ = build_sim(bn=False)
    with torch.no_grad():
        before = _sqnr(sim.fp_model(x), sim(x))
    result = qat(sim, x, epochs=4, lr=3e-4, batch_size=16, mode=mode, loss="mse")
    with torch.no_grad():
        after = _sqnr(sim.fp_model(x), sim(x))
    assert result.loss_name == "mse" and result.mode == mode and result.steps == 24
    assert after > before + 1.0, (before, after)
    assert all(type(q) is Quantizer for q in sim.quantizers().values())  # baked for export


def test_supervised_qat_reports_progress_and_stops_on_cancel():
    sim, x, labels = build_sim(bn=True)
    calls: list[tuple[int, int, float, float | None]] = []
    result = qat(
        sim,
        x,
        labels=labels,
        epochs=2,
        lr=1e-2,
        batch_size=32,
        progress=lambda *a: calls.append(a),
        eval_fn=lambda s: float((s(x).argmax(1) == labels).float().mean()),
    )
    assert result.loss_name == "cross_entropy"
    assert [c[:2] for c in calls] == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6)]
    assert calls[2][3] is not None and calls[0][3] is None and 0 <= calls[-1][3] <= 1
    assert result.epoch_losses[1] < result.epoch_losses[0]
    steps: list[int] = []
    with pytest.raises(CancelledError):
        qat(
            sim,
            x,
            labels=labels,
            epochs=2,
            batch_size=16,
            progress=lambda e, s, *_: steps.append(s),
            cancel=lambda: len(steps) >= 3,
        )
    assert steps == [1, 2, 3]


def test_bad_arguments_are_refused_with_the_accepted_choices():
    sim, x, labels = build_sim(bn=False)
    with pytest.raises(ConfigError, match="regular, range_learning"):
        prepare_qat(sim, "lsq")
    with pytest.raises(ConfigError, match="cross_entropy, mse"):
        qat(sim, x, labels=labels, loss="hinge")
    with pytest.raises(ConfigError, match="batch_size"):
        qat(sim, x, batch_size=0)
    finish_qat(sim)


def _scenario(out: Path, *args: str, expect_rc: int = 0) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.core.qat_scenarios", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == expect_rc, proc.stderr[-3000:]


def _assert_same_weights(a: Path, b: Path, **tol: float) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], **tol, msg=key)


@pytest.mark.slow
def test_checkpoint_kill_resume_gives_the_uninterrupted_weights(tmp_path):
    """Given a run SIGKILLed after step 7 (last checkpoint at step 6), when it is restarted with the same
    checkpoint dir, then it resumes at step 6 and ends with the uninterrupted run's weights."""
    # Range learning: the checkpoint must carry learned scales/zero points and their optimizer state too.
    for mode in ("range_learning",):
        ckpt = tmp_path / f"ckpt-{mode}"
        _scenario(tmp_path / f"full-{mode}.safetensors", "--mode", mode)
        _scenario(
            tmp_path / "never.safetensors",
            "--mode",
            mode,
            "--checkpoint-dir",
            str(ckpt),
            "--kill-at",
            "7",
            expect_rc=-9,
        )
        assert [p.name for p in list_checkpoints(ckpt)] == ["step-00000004", "step-00000006"]
        assert not (tmp_path / "never.safetensors").exists()
        _scenario(tmp_path / f"resumed-{mode}.safetensors", "--mode", mode, "--checkpoint-dir", str(ckpt))
        _assert_same_weights(
            tmp_path / f"full-{mode}.safetensors",
            tmp_path / f"resumed-{mode}.safetensors",
            rtol=0.0,
            atol=0.0,
        )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["regular", "range_learning"])
def test_ddp_two_gloo_processes_match_one_process_with_the_doubled_batch(tmp_path, mode):
    # Range learning: the learned scales/zero points train as one shared parameter bank, which DDP
    # must broadcast and all-reduce like any weight (core/quant/learnable_bank.py).
    _scenario(tmp_path / "single.safetensors", "--no-bn", "--batch-size", "16", "--mode", mode)
    init = tmp_path / "dist-init"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.core.qat_scenarios",
                str(tmp_path / f"ddp{rank}.safetensors"),
                "--no-bn",
                "--batch-size",
                "8",
                "--rank",
                str(rank),
                "--world-size",
                "2",
                "--init-file",
                str(init),
                "--mode",
                mode,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    _assert_same_weights(tmp_path / "single.safetensors", tmp_path / "ddp0.safetensors", rtol=1e-4, atol=1e-5)


def _bn_sim(per_channel: bool) -> tuple[QuantSim, torch.Tensor, torch.Tensor]:
    sim, x, labels = build_sim()
    model = (
        sim.fp_model
        if isinstance(sim.fp_model, torch.fx.GraphModule)
        else torch.fx.symbolic_trace(sim.fp_model)
    )
    sim = QuantSim(model, (x[:2],), prepared=True, param_bw=4, output_bw=8, per_channel=per_channel)
    sim.compute_encodings([x[:32]])
    return sim, x, labels


def test_bn_reestimation_after_qat_averages_the_first_batches_statistics():
    sim, x, labels = build_sim()
    result = qat(sim, x, epochs=1, lr=1e-2, labels=labels, batch_size=16, bn_reestimation_batches=3)
    assert result.bn_reestimated == ["1"]
    bn = sim.model.get_submodule("1")
    # Oracle: the BN's input on each of the first 3 batches (it does not depend on the BN's own stats).
    means, variances = [], []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        means.append(args[0].mean(dim=(0, 2, 3)))
        variances.append(args[0].var(dim=(0, 2, 3)))

    handle = bn.register_forward_hook(record)
    with torch.no_grad():
        for i in range(3):
            sim.model(x[16 * i : 16 * (i + 1)])
    handle.remove()
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), rtol=1e-4, atol=1e-5)
    assert not bn.training


@pytest.mark.parametrize("mode", ["regular", "range_learning"])
def test_fold_bn_after_qat_keeps_the_trained_quantized_outputs(mode):
    sim, x, labels = _bn_sim(per_channel=True)
    twin = copy.deepcopy(sim)
    kept = qat(twin, x, epochs=1, lr=1e-2, labels=labels, batch_size=16, mode=mode)
    folded = qat(sim, x, epochs=1, lr=1e-2, labels=labels, batch_size=16, mode=mode, fold_bn=True)
    assert kept.bn_folded == [] and folded.bn_folded == [("0", "1")]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sim.model.modules())
    with torch.no_grad():
        reference, test = twin.model(x), sim.model(x)
    assert _sqnr(reference, test) > 35.0
    assert float((reference.argmax(1) == test.argmax(1)).float().mean()) > 0.95


def test_fold_bn_refuses_per_tensor_weights_before_training():
    sim, x, labels = _bn_sim(per_channel=False)
    before = {k: v.clone() for k, v in sim.model.state_dict().items()}
    with pytest.raises(ConfigError, match="per-channel symmetric"):
        qat(sim, x, epochs=1, lr=1e-2, labels=labels, batch_size=16, fold_bn=True)
    after = sim.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _sqnr_weights_sim(per_channel: bool) -> tuple[QuantSim, torch.Tensor, torch.Tensor]:
    """build_sim's network with SQNR-searched weight ranges (clipped inside min/max, unlike min-max)."""
    sim, x, labels = build_sim(bn=False)
    model = (
        sim.fp_model
        if isinstance(sim.fp_model, torch.fx.GraphModule)
        else torch.fx.symbolic_trace(sim.fp_model)
    )
    sim = QuantSim(
        model, (x[:2],), prepared=True, param_bw=4, output_bw=8, param_scheme="sqnr", per_channel=per_channel
    )
    sim.compute_encodings([x[:32]])
    return sim, x, labels


def _param(sim: QuantSim, key: str) -> torch.Tensor:
    module, _, pname = key.rpartition(".param.")
    return getattr(sim.model.get_submodule(module), pname).detach().clone()


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("weight_search", ["once", "every_step"])
def test_weight_search_once_keeps_the_schemes_clip_ratio_every_step_searches_again(
    weight_search, per_channel
):
    """Given SQNR weight ranges, when a user loop takes steps, then with 'every_step' each weight encoding is
    the full search on the new weights, and with 'once' it is the new min/max times the clip ratio the
    search chose on the starting weights."""
    sim, x, labels = _sqnr_weights_sim(per_channel)
    keys = [k for k, q in sim.param_quantizers().items() if q.enabled]
    start = {k: _param(sim, k) for k in keys}
    prepare_qat(sim, "regular", weight_search=weight_search)
    opt = torch.optim.SGD(sim.model.parameters(), lr=0.5)
    for i in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(sim(x[i * 16 : (i + 1) * 16]), labels[i * 16 : (i + 1) * 16]).backward()
        opt.step()
    clipped = 0
    for key in keys:
        q, weight, weight0 = sim.param_quantizers()[key], _param(sim, key), start[key]
        if weight_search == "every_step":
            fresh = Quantizer(q.spec, scheme=q.scheme, scheme_options=q.scheme_options)
            fresh.compute_encoding_from(weight)
            assert q.encoding.equals(fresh.encoding), key
            continue
        setter = Quantizer(q.spec, scheme=q.scheme, scheme_options=q.scheme_options).range_setter
        setter.observe(weight0)
        lo0, hi0 = setter.search_range(setter.min, setter.max)
        clipped += int(bool((lo0 != setter.min).any() or (hi0 != setter.max).any()))
        lo, hi = torch.aminmax(as_groups(weight, q.spec), dim=1)
        expected = Encoding.from_min_max(
            lo * (lo0 / setter.min),
            hi * (hi0 / setter.max),
            bitwidth=4,
            symmetric=q.spec.symmetric,
            spec=q.spec,
        )
        assert q.encoding.equals(expected), key
    assert weight_search == "every_step" or clipped > 0  # the search did clip: the ratios matter
    finish_qat(sim)
    with pytest.raises(ConfigError, match="once, every_step"):
        prepare_qat(sim, "regular", weight_search="never")


@pytest.mark.parametrize("mode", ["regular", "range_learning"])
def test_activations_fused_with_their_quantizer_train_like_the_unfused_model(mode):
    """Given two copies of a sim, one with its ReLUs fused into their output quantizers (prepare_qat's
    default) and one unfused, the same training steps give the same weights."""
    sim, x, labels = build_sim(bn=True)
    twin = copy.deepcopy(sim)
    setup = prepare_qat(sim, mode)
    prepare_qat(twin, mode)
    unfuse_activations(twin.model)
    assert setup.fused == ["2", "4"]
    for model in (sim.model, twin.model):
        torch.manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(
                model(x[i * 32 : (i + 1) * 32]), labels[i * 32 : (i + 1) * 32]
            ).backward()
            opt.step()
    for (name, a), (_, b) in zip(sim.model.named_parameters(), twin.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    finish_qat(sim)
    relu = sim.model.get_submodule("2")
    assert type(relu) is quantized_class(nn.ReLU)


def test_cosine_schedule_decays_from_lr_towards_zero_and_bad_schedules_are_refused():
    total = 12
    rates = [lr_at("cosine", 1e-3, step, total) for step in range(total)]
    assert rates[0] == 1e-3 and all(a > b for a, b in itertools.pairwise(rates)) and rates[-1] < 2e-5
    assert lr_at("constant", 1e-3, 7, total) == 1e-3
    sim, x, labels = build_sim(bn=False)
    result = qat(sim, x, labels=labels, epochs=2, lr=1e-2, batch_size=16, lr_schedule="cosine")
    assert result.epoch_losses[1] < result.epoch_losses[0]
    with pytest.raises(ConfigError, match="constant, cosine, step"):
        qat(sim, x, labels=labels, lr_schedule="linear")
