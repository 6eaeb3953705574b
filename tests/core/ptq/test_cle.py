"""Cross-layer equalization: output unchanged (relative error ≤ 1e-4) and ranges equalized."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from core.ptq.channel_clip import ChannelClip
from core.ptq.cle import CleConfig, equalize_model
from core.ptq.weight_channels import in_channel_absmax, out_channel_absmax
from tests.core.ptq.tiny_models import (
    conv_chain,
    depthwise_triplet,
    randomize_bn,
    relative_error,
    residual_block,
)

TOL = 1e-4
NO_HBA = CleConfig(high_bias_fold=False)


def _equalize(model: nn.Module, x: torch.Tensor, config: CleConfig = NO_HBA):
    reference = model(x)
    result = equalize_model(fx.symbolic_trace(copy.deepcopy(model)), config)
    return result, relative_error(result.model(x), reference)


def test_conv_chain_output_unchanged_and_pair_ranges_equal():
    result, err = _equalize(conv_chain(), torch.randn(4, 3, 6, 6))
    assert err <= TOL
    # conv0→relu→conv3, conv3→relu→conv6 (then PReLU → flatten ends it), linear10→relu→linear13 (MLP pair).
    assert result.cls_sets == [("0", "3"), ("3", "6"), ("10", "13")]
    first, second = result.model.get_submodule("10"), result.model.get_submodule("13")
    torch.testing.assert_close(out_channel_absmax(first), in_channel_absmax(second), rtol=1e-4, atol=1e-6)


def test_depthwise_triplet_cube_root_balances_all_three():
    result, err = _equalize(depthwise_triplet(), torch.randn(4, 4, 6, 6))
    assert err <= TOL
    assert result.cls_sets == [("0", "3", "6")]
    m = [result.model.get_submodule(n) for n in ("0", "3", "6")]
    r0, r1, r2 = out_channel_absmax(m[0]), out_channel_absmax(m[1]), in_channel_absmax(m[2])
    torch.testing.assert_close(r0, r1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r1, r2, rtol=1e-4, atol=1e-6)


def test_residual_block_equalizes_only_inside_the_branch():
    result, err = _equalize(residual_block(), torch.randn(2, 3, 6, 6))
    assert err <= TOL
    assert result.cls_sets == [("conv1", "conv2")]


def test_per_tensor_range_spread_shrinks():
    """Equalization's purpose: per-channel ranges of a pair become closer to the tensor's max."""
    model = depthwise_triplet()
    before = fx.symbolic_trace(copy.deepcopy(model))
    from core.ptq.bn_fold import fold_all_batch_norms

    fold_all_batch_norms(before)
    ratio_before = out_channel_absmax(before.get_submodule("3"))
    result, _ = _equalize(model, torch.randn(1, 4, 6, 6))
    ratio_after = out_channel_absmax(result.model.get_submodule("3"))
    spread = lambda r: float((r / r.max()).mean())  # noqa: E731
    assert spread(ratio_after) > spread(ratio_before)


def test_relu6_replaced_with_warning_or_skipped_exactly():
    model = depthwise_triplet(nn.ReLU6)
    x = torch.randn(4, 4, 6, 6)
    with pytest.warns(UserWarning, match="ReLU6"):
        replaced, _ = _equalize(model, x, CleConfig(relu6="replace", high_bias_fold=False))
    assert replaced.relu6_replaced == ["2", "5"] and replaced.cls_sets == [("0", "3", "6")]
    skipped, err = _equalize(model, x, CleConfig(relu6="skip", high_bias_fold=False))
    assert skipped.cls_sets == [] and err <= 1e-6


@pytest.mark.parametrize("act", [nn.ReLU6, lambda: nn.Hardtanh(-1.0, 2.0)])
def test_cle_through_clipping_activations_leaves_outputs_unchanged(act):
    """Given a conv → depthwise → conv triplet joined by ReLU6 (or Hardtanh) with activations scaled so
    that they clip often, When equalizing in the default mode, Then the clips become per-channel clips,
    the ranges are balanced and the output is unchanged on the data (relative error ≤ 1e-4), where the
    ReLU6 → ReLU replacement is not."""
    model = depthwise_triplet(act)
    with torch.no_grad():
        model[1].weight.mul_(torch.linspace(0.2, 8.0, 12))  # spread and saturating channels
    x = torch.randn(16, 4, 6, 6)
    reference = model(x)
    assert float((model[2](model[1](model[0](x))) >= model[2].max_val).float().mean()) > 0.05
    result, err = _equalize(model, x)
    assert err <= TOL and result.cls_sets == [("0", "3", "6")]
    assert result.relu6_replaced == [] and result.clips_scaled == ["2", "5"]
    assert all(isinstance(result.model.get_submodule(n), ChannelClip) for n in ("2", "5"))
    m = [result.model.get_submodule(n) for n in ("0", "3", "6")]
    torch.testing.assert_close(out_channel_absmax(m[0]), out_channel_absmax(m[1]), rtol=1e-4, atol=1e-6)
    if isinstance(model[2], nn.ReLU6):
        with pytest.warns(UserWarning, match="ReLU6"):
            replaced = equalize_model(fx.symbolic_trace(copy.deepcopy(model)), CleConfig(relu6="replace"))
        assert relative_error(replaced.model(x), reference) > 10 * TOL


def test_high_bias_absorbed_through_relu6_lowers_the_clip_and_keeps_outputs():
    """Given conv-BN (β well above 3γ) → ReLU6 → 1x1 conv, When equalizing with high-bias absorption,
    Then the bias moves into the next layer, the clip's bound drops by it and the output is unchanged."""
    model = randomize_bn(
        nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU6(), nn.Conv2d(6, 4, 1)), seed=5
    )
    x = torch.randn(64, 3, 4, 4)
    with torch.no_grad():
        y = model[0](x)
        model[1].running_mean.copy_(y.mean((0, 2, 3)))
        model[1].running_var.copy_(y.var((0, 2, 3)))
        model[1].weight.fill_(0.5)
        model[1].bias.copy_(torch.linspace(2.0, 9.0, 6))  # some channels always saturate at 6
    result, err = _equalize(model, x, CleConfig(num_sigma=6.0))
    assert result.high_bias_absorbed == [("0", "3")] and err <= TOL
    clip = result.model.get_submodule("2")
    assert isinstance(clip, ChannelClip) and bool(torch.all(clip.upper >= 0))


def test_channel_clip_exports_and_runs_in_onnx_runtime(tmp_path):
    import numpy as np
    import onnxruntime as ort

    clip = ChannelClip(torch.tensor([0.0, -1.0, 0.5]), torch.tensor([6.0, 1.0, 2.0]))
    x = torch.randn(2, 3, 4, 4) * 4
    path = tmp_path / "clip.onnx"
    torch.onnx.export(clip, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, clip(x).numpy(), rtol=0, atol=0)


def test_high_bias_absorption_is_exact_through_identity_into_unpadded_layer():
    """Given conv-BN (large β) → 1x1 conv with no activation, When absorbing, Then the bias moves
    into the next layer and the output stays the same."""
    torch.manual_seed(3)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 1)), seed=3)
    model[1].bias.data += 5.0
    x = torch.randn(2, 3, 6, 6)
    result, err = _equalize(model, x, CleConfig())
    plain, _ = _equalize(model, x)
    assert result.high_bias_absorbed == [("0", "2")]
    assert err <= TOL
    absorbed = result.model.get_submodule("0").bias.detach().abs().mean()
    kept = plain.model.get_submodule("0").bias.detach().abs().mean()
    assert absorbed < kept - 4.0


def test_high_bias_absorption_with_relu_keeps_output_close_when_nothing_is_clipped():
    torch.manual_seed(4)
    model = randomize_bn(
        nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1)), seed=4
    )
    model[1].bias.data.fill_(8.0)
    model[1].weight.data.fill_(0.5)
    # BN statistics measured on the data: pre-activations ≈ N(8, 0.25), never below 8 − 6·0.5 here.
    x = torch.randn(64, 3, 4, 4)
    with torch.no_grad():
        y = model[0](x)
        model[1].running_mean.copy_(y.mean((0, 2, 3)))
        model[1].running_var.copy_(y.var((0, 2, 3)))
    result, err = _equalize(model, x, CleConfig(num_sigma=6.0))
    assert result.high_bias_absorbed == [("0", "3")]
    assert err <= TOL


def _true_bn_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Make every BN's running statistics exactly those of ``x`` (one cumulative train-mode pass)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def _output_moments(gm: fx.GraphModule, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seen: list[torch.Tensor] = []
    handle = gm.get_submodule(name).register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        gm(x)
    handle.remove()
    return seen[0].mean((0, 2, 3)), seen[0].std((0, 2, 3))


@pytest.mark.parametrize("high_bias", [False, True])
def test_bn_statistics_describe_the_equalized_layers(high_bias):
    """Given BN statistics that are true for the data, When equalizing (and absorbing high biases), Then
    ``bn_fold.bn_stats`` still give each layer's output mean and spread — not the pre-CLE ones, which
    analytical bias correction after CLE would otherwise read."""
    x = torch.randn(64, 4, 6, 6, generator=torch.Generator().manual_seed(5))
    model = depthwise_triplet()
    if high_bias:
        model[1].bias.data[:4] += 20.0
    _true_bn_statistics(model, x)
    config = CleConfig() if high_bias else NO_HBA
    result = equalize_model(fx.symbolic_trace(copy.deepcopy(model)), config)
    assert result.bn_fold is not None
    assert (result.high_bias_absorbed != []) == high_bias
    layers = ["0"] if high_bias else ["0", "3"]  # absorption into the padded depthwise is inexact
    for name in layers:
        stats = result.bn_fold.bn_stats[name]
        mean, std = _output_moments(result.model, name, x)
        torch.testing.assert_close(stats.beta, mean, rtol=1e-2, atol=1e-3)
        torch.testing.assert_close(stats.gamma.abs(), std, rtol=1e-2, atol=1e-3)
        bn = model.get_submodule(str(int(name) + 1))
        assert not torch.allclose(bn.weight.abs(), std, rtol=0.05)  # CLE really rescaled this layer


@pytest.mark.parametrize("prepared", [False, True])
def test_residual_stream_is_equalized_across_the_addition(prepared):
    """Given stem → (conv1 → conv2) + skip → head, When equalizing, Then the stream written by stem and
    conv2 and read by conv1 and head is scaled as one (widest producer range = widest consumer range per
    channel) and the output is unchanged — for a traced ``+`` and for the prepared graph's Add module."""
    from core.graph import prepare_model
    from core.ptq.cle_streams import ResidualStream

    model, x = residual_block(), torch.randn(2, 3, 6, 6)
    reference = model(x)
    gm = prepare_model(copy.deepcopy(model), (x,)) if prepared else fx.symbolic_trace(copy.deepcopy(model))
    result = equalize_model(gm, NO_HBA)
    assert relative_error(result.model(x), reference) <= TOL
    assert result.residual_streams == [ResidualStream(("conv2", "stem"), ("conv1", "head"), ())]
    m = {n: result.model.get_submodule(n) for n in ("stem", "conv1", "conv2", "head")}
    widest_out = torch.maximum(out_channel_absmax(m["stem"]), out_channel_absmax(m["conv2"]))
    widest_in = torch.maximum(in_channel_absmax(m["conv1"]), in_channel_absmax(m["head"]))
    torch.testing.assert_close(widest_out, widest_in, rtol=1e-4, atol=1e-6)
    off = equalize_model(fx.symbolic_trace(copy.deepcopy(model)), CleConfig(residual_streams=False))
    assert off.residual_streams == []


@pytest.mark.parametrize("with_head", [False, True])
def test_residual_stream_reaching_the_model_output_is_left_alone(with_head):
    """A stream the model returns cannot be rescaled without changing the output; read by a head conv,
    the same stream is equalized."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.relu, self.b = nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1)
            self.head = nn.Conv2d(4, 2, 1) if with_head else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.a(x))
            return self.head(y + self.b(y))

    result = equalize_model(fx.symbolic_trace(Block()), NO_HBA)
    expected = [("a", "b")] if with_head else []
    assert [s.producers for s in result.residual_streams] == expected
