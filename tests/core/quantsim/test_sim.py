"""QuantSim end to end on the trained digits CNN: accuracy, SQNR, calibration semantics, enabling, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.quantsim import QuantSim
from examples.digits.model import DigitsCNN


def _sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    noise = (reference - test).pow(2).sum()
    return float(10 * torch.log10(reference.pow(2).sum() / noise.clamp_min(1e-30)))


@pytest.fixture(scope="module")
def digits(digits_artifacts):
    """(trained DigitsCNN, calibration inputs, eval inputs, eval labels) from the example's artifacts."""
    from core.io.models import load_exported_program

    program = load_exported_program(digits_artifacts.model_pt2)
    model = DigitsCNN()
    missing, _ = model.load_state_dict(dict(program.state_dict.items()), strict=False)
    assert not [k for k in missing if not k.endswith("num_batches_tracked")]
    model.eval()
    calib = torch.from_numpy(np.load(digits_artifacts.calib_data)["input"])
    data = np.load(digits_artifacts.eval_data)
    return model, calib, torch.from_numpy(data["input"]), torch.from_numpy(data["labels"])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def test_w8a8_keeps_accuracy_and_names(digits):
    model, calib, x, y = digits
    sim = QuantSim(model, (calib[:1],), param_bw=8, output_bw=8)
    sim.compute_encodings(calib.split(64))
    with torch.no_grad():
        fp, q = sim.fp_model(x), sim(x)
        assert torch.equal(fp, model(x))  # the FP reference is the original model, untouched
    assert _accuracy(q, y) >= _accuracy(fp, y) - 0.02
    assert _sqnr_db(fp, q) >= 25.0
    # Module and parameter names survive the class swap: every FP key is in the sim's state dict.
    assert set(sim.fp_model.state_dict()) <= set(sim.model.state_dict())
    for name, module in sim.quantized_modules().items():
        assert type(module).__name__ == "Quantized" + type(sim.fp_model.get_submodule(name)).__name__
    # ... and the FP model holds no quantizers.
    assert not [n for n, _ in sim.fp_model.named_modules() if "quantizers" in n]


def test_w4_per_channel_beats_per_tensor(digits):
    model, calib, x, _ = digits
    scores = {}
    for per_channel in (True, False):
        sim = QuantSim(model, (calib[:1],), param_bw=4, output_bw=8, per_channel=per_channel)
        sim.compute_encodings(calib.split(64))
        with torch.no_grad():
            scores[per_channel] = _sqnr_db(sim.fp_model(x), sim(x))
    assert scores[True] > scores[False]


def test_disabled_sim_equals_fp_model_exactly(digits):
    model, calib, x, _ = digits
    sim = QuantSim(model, (calib[:1],))
    sim.compute_encodings(calib.split(64))
    assert sim.set_enabled(False) == len(sim.quantizers())
    with torch.no_grad():
        assert torch.equal(sim(x), sim.fp_model(x))
    # Weights only: activations stay float, weights quantized.
    sim.set_enabled(True, kind="param")
    with torch.no_grad():
        weights_only = sim(x)
    assert not torch.equal(weights_only, sim.fp_model(x))
    sim.set_enabled(True)
    with torch.no_grad():
        assert not torch.equal(sim(x), weights_only)


def test_calibration_sees_quantized_weights_and_float_activations():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)).eval()
    data = [torch.randn(32, 16) for _ in range(3)]
    sim = QuantSim(model, (data[0],), param_bw=2, output_bw=8, per_channel=False)
    sim.compute_encodings(data)
    quantizers = sim.quantizers()
    first, second = sim.model.get_submodule("0"), sim.model.get_submodule("1")
    out_q, in2 = quantizers["0.output.0"], quantizers["1.output.0"]
    w_q = quantizers["0.param.weight"]
    # What the first layer's output quantizer observed: the layer with 2-bit weights on the float input.
    with torch.no_grad():
        w = torch.nn.functional.linear
        hidden = [w(b, w_q(first.weight), first.bias) for b in data]  # input quantizer passes through too
        expected_lo = min(float(h.min()) for h in hidden)
        expected_hi = max(float(h.max()) for h in hidden)
    enc = out_q.encoding
    assert enc is not None
    half = float(enc.scale[0]) / 2
    assert float(enc.min[0]) == pytest.approx(expected_lo, abs=half + 1e-6)
    assert float(enc.max[0]) == pytest.approx(expected_hi, abs=half + 1e-6)
    # The second layer's output range is observed on float (unquantized) hidden activations.
    with torch.no_grad():
        outs = [w(h, quantizers["1.param.weight"](second.weight), second.bias) for h in hidden]
    enc2 = in2.encoding
    assert enc2 is not None
    assert float(enc2.max[0]) == pytest.approx(
        max(float(o.max()) for o in outs), abs=float(enc2.scale[0]) / 2 + 1e-6
    )
    # Changing the weights and recalibrating changes the activation ranges accordingly.
    with torch.no_grad():
        first.weight.mul_(3.0)
        first.bias.mul_(3.0)
    sim.compute_encodings(data)
    enc_after = out_q.encoding
    assert enc_after is not None
    assert float(enc_after.max[0] - enc_after.min[0]) == pytest.approx(
        3 * float(enc.max[0] - enc.min[0]), rel=0.05
    )


def test_sim_runs_on_each_device(digits, device):
    model, calib, x, y = digits
    sim = QuantSim(model, (calib[:1],)).to(device)
    sim.compute_encodings([b.to(device) for b in calib.split(64)])
    with torch.no_grad():
        q = sim(x.to(device)).cpu()
        fp = sim.fp_model(x.to(device)).cpu()
    assert _sqnr_db(fp, q) >= 25.0
    assert _accuracy(q, y) >= _accuracy(fp, y) - 0.02
    assert all(q_.scale.device.type == device.type for q_ in sim.quantizers().values())


def test_compute_encodings_needs_data_and_can_cancel(digits):
    from core.errors import CancelledError, ConfigError

    model, calib, _, _ = digits
    sim = QuantSim(model, (calib[:1],))
    with pytest.raises(ConfigError, match="no calibration batches"):
        sim.compute_encodings([])
    with pytest.raises(CancelledError):
        sim.compute_encodings(calib.split(64), cancel=lambda: True)
    seen: list[float] = []
    sim.compute_encodings(calib.split(64), num_batches=2, progress=seen.append)
    assert seen == [0.5, 1.0]


@pytest.mark.parametrize("symmetric", [False, True])
def test_relu_fused_with_its_output_quantizer_gives_the_unfused_values(monkeypatch, symmetric):
    """Inference quantizes the ReLU's input in one pass when the grid starts at 0; values are unchanged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    data = [torch.randn(4, 3, 40, 40) for _ in range(2)]
    sim = QuantSim(model, (data[0],))
    sim.compute_encodings(data)
    q = sim.quantizers()["2.output.0"]
    if symmetric:
        q.set_spec(symmetric=True)
        sim.compute_encodings(data)
    assert q.encoding is not None
    relu_calls = []
    original = torch.nn.ReLU.forward
    monkeypatch.setattr(torch.nn.ReLU, "forward", lambda self, x: relu_calls.append(1) or original(self, x))
    x = torch.randn(4, 3, 40, 40) * 3
    with torch.no_grad():
        pre = sim.model.get_submodule("1")(sim.model.get_submodule("0")(x))
        expected = q(torch.relu(pre))
        got = sim.model(x)
    assert torch.equal(got, expected)
    assert bool((got >= 0).all())  # no negative value survives, fused or not
    # The fused path skips ReLU's own pass; a signed grid (which can hold negatives) must not.
    assert len(relu_calls) == (1 if symmetric else 0)
    assert relu_calls or q.quantize_relu_input(pre) is not None
    # Training (autograd through the quantizer) takes the ordinary path.
    relu_calls.clear()
    sim.model(x.requires_grad_())
    assert len(relu_calls) == 1
