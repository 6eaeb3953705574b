"""Quantized-input calibration (core/quantsim/refine.py): oracles from hand-run quantized forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.quant.encoding import Encoding
from core.quantsim import QuantSim


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def _sim(scheme: str = "min_max") -> tuple[QuantSim, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = _Chain().eval()
    x = torch.randn(64, 6) * 3
    sim = QuantSim(model, (x[:1],), scheme=scheme)
    return sim, list(x.split(16))


def test_refined_min_max_ranges_are_those_of_the_quantized_inputs():
    """Given min-max encodings from float calibration, When one refinement pass runs,
    Then fc2's output range is the min/max of fc2's output computed from the *quantized* upstream,
    with the upstream encodings of the float calibration (all encodings change together)."""
    sim, data = _sim()
    sim.compute_encodings(data)
    before = {k: q.encoding for k, q in sim.activation_quantizers().items()}
    # Oracle: with every other quantizer at its float-calibrated encoding and fc2's output quantizer
    # off, the model's output is exactly what that quantizer receives on target.
    q = sim.model.get_submodule("fc2").output_quantizers[0]
    q.enabled = False
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        for batch in data:
            seen.append(sim.model(batch))
    q.enabled = True
    target = torch.cat(seen)
    expected = Encoding.from_min_max(
        target.min().reshape(1), target.max().reshape(1), bitwidth=8, symmetric=False, spec=q.spec
    )
    sim.compute_encodings(data, quantized_input_passes=1)
    got = q.encoding
    assert got is not None
    torch.testing.assert_close(got.scale, expected.scale)
    torch.testing.assert_close(got.offset, expected.offset)
    # The first activation quantizer (model input) sees float data either way: unchanged.
    first = "fc1.input.0"
    assert first in before
    torch.testing.assert_close(sim.activation_quantizers()[first].encoding.scale, before[first].scale)  # type: ignore[union-attr]


def test_relu_output_is_observed_after_the_relu():
    """The fused ReLU + quantizer inference path must not leak the ReLU's negative input into the range."""
    sim, data = _sim()
    sim.compute_encodings(data, quantized_input_passes=2)
    enc = sim.model.get_submodule("relu").output_quantizers[0].encoding
    assert enc is not None
    assert float(enc.min[0]) == 0.0  # min-max of a ReLU output starts at 0, not below


def test_weights_frozen_and_disabled_quantizers_untouched():
    sim, data = _sim("percentile")
    sim.compute_encodings(data)
    weights = {k: q.encoding for k, q in sim.param_quantizers().items()}
    frozen = sim.model.get_submodule("relu").output_quantizers[0]
    frozen.freeze()
    frozen_enc = frozen.encoding
    disabled = sim.model.get_submodule("fc2").output_quantizers[0]
    disabled_enc = disabled.encoding
    disabled.enabled = False
    from core.quantsim.refine import refine_encodings

    assert refine_encodings(sim, data, passes=2) == 2
    for k, q in sim.param_quantizers().items():
        torch.testing.assert_close(q.encoding.scale, weights[k].scale)  # type: ignore[union-attr]
    torch.testing.assert_close(frozen.encoding.scale, frozen_enc.scale)  # type: ignore[union-attr]
    torch.testing.assert_close(disabled.encoding.scale, disabled_enc.scale)  # type: ignore[union-attr]
    # The quantizers are back in their slots (no wrapper left behind).
    assert all(type(q).__name__ == "Quantizer" for q in sim.quantizers().values())


def test_refinement_keeps_simulation_close_to_float():
    """Oracle: a refined W8A8 sim of a small MLP stays within 8-bit noise of FP32 (SQNR ≥ 25 dB)."""
    sim, data = _sim("percentile")
    sim.compute_encodings(data, quantized_input_passes=2)
    x = torch.cat(data)
    with torch.no_grad():
        ref, out = sim.fp_model(x), sim.model(x)
    sqnr = 10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum())
    assert float(sqnr) >= 25.0


def test_errors_say_what_is_wrong():
    sim, data = _sim()
    from core.quantsim.refine import refine_encodings

    with pytest.raises(ConfigError, match="compute_encodings"):
        refine_encodings(sim, data)  # nothing calibrated yet
    sim.compute_encodings(data)
    with pytest.raises(ConfigError, match="≥ 0"):
        refine_encodings(sim, data, passes=-1)
    with pytest.raises(ConfigError, match="iterated again"):
        sim.compute_encodings(iter(data), quantized_input_passes=1)
