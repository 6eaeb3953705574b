"""Sequential MSE: weight ranges chosen by each layer's output error never do worse than min-max."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn
from torch.func import functional_call

from core.ptq.bn_fold import fold_all_batch_norms
from core.ptq.layer_io import capture
from core.ptq.seq_mse import SeqMseConfig, apply_seq_mse
from core.quant.encoding import Encoding
from core.quant.primitives import fake_quantize
from core.quantsim import QuantSim
from tests.core.ptq.tiny_models import depthwise_triplet


def _model() -> fx.GraphModule:
    """Depthwise triplet with widely spread channels, then pooling and a Linear head."""
    body = depthwise_triplet(nn.ReLU6)
    with torch.no_grad():
        body[0].weight.mul_(torch.linspace(0.05, 3.0, 12).reshape(-1, 1, 1, 1))
    model = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    gm = fx.symbolic_trace(model)
    fold_all_batch_norms(gm)
    return gm


def _output_error(sim, name: str, x: torch.Tensor, encoding: Encoding) -> float:
    """‖layer(x; Q(W)) − layer(x; W)‖² with x the layer's input in the sim (activation quantizers off)."""
    qmod = sim.model.get_submodule(name)
    fmod = sim.fp_model.get_submodule(name)
    weight = qmod._parameters["weight"].detach()
    bias = {"bias": qmod._parameters["bias"].detach()} if qmod._parameters.get("bias") is not None else {}
    inp = capture(sim.model, qmod, (x,), output=False)
    ref = functional_call(fmod, {"weight": weight, **bias}, (inp,))
    out = functional_call(fmod, {"weight": fake_quantize(weight, encoding), **bias}, (inp,))
    return float((out - ref).square().sum())


@pytest.mark.parametrize("per_channel", [False, True])
def test_seq_mse_never_increases_a_layers_output_error_over_min_max(per_channel):
    """Given a W4 sim, When sequential MSE chooses the weight ranges, Then every layer's output error on
    the calibration data (measured here with plain fake quantization) is at most min-max's, some strictly
    smaller, and the ranges stay frozen through compute_encodings."""
    torch.manual_seed(0)
    x = torch.randn(64, 4, 6, 6)
    sim = QuantSim(_model(), (x[:1],), param_bw=4, output_bw=8, per_channel=per_channel, scheme="min_max")
    min_max = copy.deepcopy(sim)
    min_max.compute_param_encodings()
    result = apply_seq_mse(sim, x, SeqMseConfig(num_candidates=10, batch_size=16))
    names = [r.name for r in result.layers]
    assert len(names) == 4
    sim.set_enabled(False, kind="activation")
    improved = 0
    for r in result.layers:
        chosen = sim.model.get_submodule(r.name).param_quantizers["weight"].encoding
        baseline = min_max.model.get_submodule(r.name).param_quantizers["weight"].encoding
        err_chosen = _output_error(sim, r.name, x, chosen)
        err_min_max = _output_error(sim, r.name, x, baseline)
        assert err_chosen <= err_min_max * (1 + 1e-5)
        assert err_chosen == pytest.approx(r.seq_mse_error, rel=1e-3)
        improved += err_chosen < 0.99 * err_min_max
    assert improved >= 2
    sim.set_enabled(True, kind="activation")
    before = {n: sim.model.get_submodule(n).param_quantizers["weight"].encoding for n in names}
    sim.compute_encodings([x])
    for n in names:
        assert sim.model.get_submodule(n).param_quantizers["weight"].encoding.equals(before[n])
