"""AdaRound: lower per-layer reconstruction error than nearest rounding, on every layer, frozen into the sim."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from core.ptq.adaround import AdaroundConfig, adaroundable_layers, apply_adaround
from core.quant.primitives import fake_quantize
from core.quantsim import QuantSim

FAST = AdaroundConfig(num_iterations=1500, num_samples=128)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()


def _data(n: int = 128) -> torch.Tensor:
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(1))


def _layer_error(sim: QuantSim, name: str, x: torch.Tensor, weight: torch.Tensor) -> float:
    """Independent oracle: ‖layer(x̃; weight) − fp_layer(x)‖² summed over channels, mean elsewhere;
    x̃ is the layer's input in the sim as it runs (activation quantizers on: AdaRound's quantized inputs)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        sim.model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.setdefault("q", a[0])),
        sim.fp_model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.setdefault("fp", o)),
    ]
    with torch.no_grad():
        sim.model(x)
        sim.fp_model(x)
    for h in hooks:
        h.remove()
    fp_layer = sim.fp_model.get_submodule(name)
    with torch.no_grad():
        out = functional_call(fp_layer, {"weight": weight, "bias": fp_layer.bias}, (seen["q"],))
    diff = (out - seen["fp"]).pow(2)
    return float(diff.sum(-1 if isinstance(fp_layer, nn.Linear) else 1).mean())


def _sim(x: torch.Tensor) -> QuantSim:
    sim = QuantSim(_model(), (x[:1],), param_bw=4, output_bw=8, per_channel=False)
    sim.compute_encodings(x.split(32))
    return sim


def test_adaround_beats_nearest_on_every_layer_and_freezes_the_weights():
    x = _data()
    sim = _sim(x)
    layers = adaroundable_layers(sim)
    assert layers == ["0", "2", "4", "7"]
    nearest = {}
    for name in layers:
        q = sim.model.get_submodule(name).param_quantizers["weight"]
        nearest[name] = fake_quantize(sim.fp_model.get_submodule(name).weight.detach(), q.encoding)
    result = apply_adaround(sim, x, FAST)
    assert [r.name for r in result.layers] == layers
    assert {r.name: r.method for r in result.layers}["4"] == "sampled"  # ConvTranspose has no Gram form
    for name in layers:
        module = sim.model.get_submodule(name)
        ada_weight = module.weight.detach()
        assert _layer_error(sim, name, x, ada_weight) < _layer_error(sim, name, x, nearest[name]), name
        q = module.param_quantizers["weight"]
        assert q.frozen
        # On the grid: fake-quantizing the stored weight is the identity.
        torch.testing.assert_close(fake_quantize(ada_weight, q.encoding), ada_weight, rtol=0, atol=1e-6)
    sim.set_enabled(False, kind="activation")
    before = sim.model(x)
    sim.set_enabled(True, kind="activation")
    sim.compute_encodings(x.split(32))  # recalibrating activations must not undo the rounding
    sim.set_enabled(False, kind="activation")
    torch.testing.assert_close(sim.model(x), before, rtol=0, atol=0)
    sim.set_enabled(True, kind="activation")
    assert all(q.enabled for q in sim.activation_quantizers().values())


def test_an_uncalibrated_sim_is_rounded_on_inputs_with_activations_quantized_at_float_weight_ranges():
    """Given a sim without activation encodings, When AdaRound runs (quantized inputs, the default),
    Then the activation ranges are those of the float-weight network (W32A8 calibration), and each
    layer's reported errors are the oracle's with those quantized inputs."""
    x = _data()
    sim = QuantSim(_model(), (x[:1],), param_bw=4, output_bw=8, per_channel=False)
    reference = QuantSim(_model(), (x[:1],), param_bw=4, output_bw=8, per_channel=False)
    reference.set_enabled(False, kind="param")
    reference.compute_encodings(x.split(32))
    result = apply_adaround(sim, x, AdaroundConfig(num_iterations=200, num_samples=128))
    for key, q in sim.activation_quantizers().items():
        expected = reference.activation_quantizers()[key].encoding
        assert q.encoding is not None and expected is not None, key
        torch.testing.assert_close(q.encoding.scale, expected.scale)
    for layer in result.layers:
        module = sim.model.get_submodule(layer.name)
        assert _layer_error(sim, layer.name, x, module.weight.detach()) == pytest.approx(
            layer.adaround_error, rel=1e-3
        ), layer.name


def test_spill_to_disk_with_a_tiny_budget(tmp_path):
    x = _data()
    sim = _sim(x)
    config = AdaroundConfig(
        num_iterations=300,
        num_samples=128,
        method="sampled",
        cache_budget_bytes=1024,
        spill_dir=str(tmp_path),
    )
    result = apply_adaround(sim, x, config, layers=["2"])
    (layer,) = result.layers
    assert layer.spilled and layer.method == "sampled"
    assert layer.adaround_error < layer.nearest_error
    assert list(tmp_path.iterdir()) == []  # spill files removed


def test_cancel_and_progress():
    from core.errors import CancelledError

    x = _data(32)
    sim = _sim(x)
    seen: list[float] = []
    apply_adaround(sim, x, AdaroundConfig(num_iterations=10), layers=["0"], progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    try:
        apply_adaround(sim, x, AdaroundConfig(num_iterations=10), layers=["2"], cancel=lambda: True)
    except CancelledError:
        pass
    else:
        raise AssertionError("cancel() returning True must raise CancelledError")
    assert all(q.enabled for q in sim.activation_quantizers().values())
