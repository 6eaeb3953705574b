"""Quantizer placement from configs on small prepared models (core.graph.prepare_model via QuantSim)."""

from __future__ import annotations

import json
from importlib import resources

import torch
from torch import nn

from core.quantsim import QuantSim


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)
        self.softmax = nn.Softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        z = self.relu2(self.conv2(y) + y)  # Add + Relu supergroup
        z = self.up(z)
        return self.softmax(self.fc(z.mean((2, 3))))


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).flatten(1)  # data movement between two quantized layers
        return self.fc(y.view(y.shape[0], -1))


class Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.cumsum(self.fc1(x), dim=1))  # cumsum has no module: stays a function


class FeedForward(nn.Module):
    """T5's FFN: a bias-less linear (exports as MatMul, not Gemm) into a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.wi = nn.Linear(8, 16, bias=False)
        self.act = nn.ReLU()
        self.wo = nn.Linear(16, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.act(self.wi(x)))


def _sim(model: nn.Module, shape: tuple[int, ...], **kwargs) -> QuantSim:
    torch.manual_seed(0)
    return QuantSim(model.eval(), (torch.randn(*shape),), **kwargs)


def _keys(sim: QuantSim) -> set[str]:
    return set(sim.quantizers())


def test_conv_bn_relu_and_add_relu_supergroups_have_no_quantizer_inside():
    sim = _sim(ConvBnRelu(), (2, 3, 8, 8))
    keys = _keys(sim)
    # Conv -> BN (folds) -> Relu: one quantizer, at the Relu's output.
    assert "conv.output.0" not in keys and "bn.output.0" not in keys and "bn.input.0" not in keys
    assert "relu.input.0" not in keys and "relu.output.0" in keys
    assert not [k for k in keys if k.startswith("bn.param.")]  # BN folds into conv on target
    # Add -> Relu: the add's output and the relu's input are inside the group.
    add = next(n for n, p in sim.plans.items() if p.op_type == "Add")
    relu2 = next(n for n, p in sim.plans.items() if p.op_type == "Relu" and n != "relu")
    assert f"{add}.output.0" not in keys and f"{relu2}.input.0" not in keys and f"{relu2}.output.0" in keys
    # The add's inputs come from quantized outputs (conv2's and relu's): nothing to add there.
    assert not [k for k in keys if k.startswith(f"{add}.input")]
    assert "conv2.output.0" in keys  # conv2 -> add is not a supergroup


def test_biasless_linear_relu_is_no_supergroup_and_the_relu_output_shares_its_quantizer():
    sim = _sim(FeedForward(), (4, 3, 8))
    quantizers = sim.quantizers()
    # AIMET sees MatMul→Relu (no supergroup): the MatMul output is quantized, and aimet-onnx ties the
    # Relu's output quantizer to it (one object, one grid over the MatMul's range).
    assert quantizers["wi.output.0"] is quantizers["act.output.0"]
    sim.compute_encodings([torch.randn(4, 3, 8) for _ in range(2)])
    encoding = quantizers["act.output.0"].encoding
    assert encoding is not None and float(encoding.min) < 0  # the MatMul's range, not [0, max]
    x = torch.randn(4, 3, 8)
    with torch.no_grad():
        hidden = sim.model.wi(x)  # quantized by its output quantizer
    assert torch.equal(quantizers["act.output.0"](torch.relu(hidden)), torch.relu(hidden))


def test_model_input_bias_and_per_channel_axes():
    sim = _sim(ConvBnRelu(), (2, 3, 8, 8))
    quantizers = sim.quantizers()
    assert "conv.input.0" in quantizers  # model input quantized (default config)
    assert not [k for k in quantizers if k.endswith("param.bias")]
    conv_w, up_w, fc_w = (quantizers[f"{m}.param.weight"].spec for m in ("conv", "up", "fc"))
    assert (conv_w.granularity, conv_w.axis, conv_w.symmetric) == ("per_channel", 0, True)
    assert (up_w.granularity, up_w.axis) == ("per_channel", 1)  # ConvTranspose: out channels on axis 1
    assert (fc_w.granularity, fc_w.axis) == ("per_channel", 0)
    assert not quantizers["relu.output.0"].spec.symmetric  # activations asymmetric
    # Calibrated per-channel weight encodings have one scale per output channel.
    sim.compute_encodings([torch.randn(2, 3, 8, 8)])
    assert quantizers["up.param.weight"].scale.shape == (4,)
    assert quantizers["conv.param.weight"].scale.shape == (8,)


def test_model_input_off_and_op_type_rules():
    raw = json.loads(resources.files("core.quantsim.presets").joinpath("default.json").read_text())
    raw["model_input"] = {"is_input_quantized": "False"}
    raw["op_type"]["Relu"] = {"is_output_quantized": "False"}
    raw["supergroups"] = []
    sim = _sim(ConvBnRelu(), (2, 3, 8, 8), config=raw)
    keys = _keys(sim)
    assert "conv.input.0" not in keys
    assert "relu.output.0" not in keys
    # The relu's float output reaches conv2 and the add: they quantize it where they read it.
    assert "conv2.input.0" in keys


def test_data_movement_between_layers_needs_no_second_quantizer():
    sim = _sim(Flat(), (2, 1, 8, 8))
    keys = _keys(sim)
    assert "conv.output.0" in keys
    assert "fc.input.0" not in keys  # flatten/view keep the conv's quantized values


def test_unconverted_functional_op_consumer_gets_an_input_quantizer():
    sim = _sim(Cumsum(), (2, 6))
    keys = _keys(sim)
    assert "fc1.output.0" in keys
    assert "fc2.input.0" in keys  # cumsum's float result is quantized where fc2 reads it


def test_htp_softmax_is_fixed_to_zero_one_and_frozen():
    sim = _sim(ConvBnRelu(), (2, 3, 8, 8), config="htp_v73")
    q = sim.quantizers()["softmax.output.0"]
    assert q.frozen
    enc = q.encoding
    assert enc is not None and float(enc.min[0]) == 0.0 and float(enc.max[0]) == 1.0
    sim.compute_encodings([torch.randn(4, 3, 8, 8) * 5])
    after = q.encoding
    assert after is not None and after.equals(enc)
    assert sim.quantizers()["fc.param.weight"].spec.granularity == "per_tensor"  # HTP: no per-channel Gemm


def test_overrides_by_pattern():
    overrides = [
        {"pattern": "conv2", "enabled": False},
        {"pattern": "fc", "output_bw": 16},
        {"pattern": "up", "param_bw": 4},
    ]
    sim = _sim(ConvBnRelu(), (2, 3, 8, 8), overrides=overrides)
    quantizers = sim.quantizers()
    assert not [k for k in quantizers if k.startswith("conv2.")]
    assert quantizers["fc.output.0"].spec.bitwidth == 16
    assert quantizers["fc.param.weight"].spec.bitwidth == 8
    up = quantizers["up.param.weight"].spec
    assert (up.bitwidth, up.granularity, up.axis) == (4, "per_channel", 1)
    assert quantizers["up.output.0"].spec.bitwidth == 8
    assert sim.plans["conv2"].reasons["override"].startswith("disabled by override")
