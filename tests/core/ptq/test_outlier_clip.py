"""Outlier clipping by output error: a massive activation in a post-norm block, sim and ONNX Runtime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.ptq.outlier_clip import OutlierClipConfig, clip_activation_outliers


class _PostNormBlock(nn.Module):
    """BERT-style post-norm FFN block whose down projection writes a massive value into channel 5 of
    token 0 (what MiniLM's FFN does for [CLS]), then a second block reads the normalized stream."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.up, self.act, self.down = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, d)
        self.ln_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x + self.down(self.act(self.up(x))))
        return self.ln_out(h + self.head(h))


def _model_and_data() -> tuple[nn.Module, list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = _PostNormBlock().eval()
    with torch.no_grad():
        # Up-projection unit 0 fires only on token 0 (feature 0 is a marker), and writes 150 into channel 5.
        model.up.weight[0].zero_()
        model.up.weight[0, 0] = 10.0
        model.up.bias[0] = -5.0
        model.down.weight[:, 0] = 0.0
        model.down.weight[5, 0] = 3.0

    def batch(n: int) -> torch.Tensor:
        x = torch.randn(n, 64, 32)
        x[:, :, 0] = -1.0
        x[:, 0, 0] = 5.0  # the marker token
        return x

    return model, [batch(8) for _ in range(4)], batch(16)


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).sum() / (b**2).sum())


def test_clipping_the_massive_activation_lowers_held_out_error_and_ort_agrees(tmp_path):
    """Given a post-norm block whose FFN output and residual add carry one massive value (~150 vs ±4),
    When clipping by output error after min-max calibration, Then the residual-stream quantizers are
    clipped well below their range, the error on held-out inputs drops by more than half, and the
    exported QDQ model in ONNX Runtime computes what the simulation does."""
    from core.export.runtime import OnnxRunner
    from core.quantsim import QuantSim

    model, calib, held_out = _model_and_data()
    sim = QuantSim(model, (calib[0],), scheme="min_max")
    sim.compute_encodings(calib)
    with torch.no_grad():
        reference = model(held_out)
        before = _error(sim.model(held_out), reference)
    result = clip_activation_outliers(sim, calib, OutlierClipConfig(num_samples=16, batch_size=8))
    with torch.no_grad():
        simulated = sim.model(held_out)
    after = _error(simulated, reference)

    assert "down.output.0" in result.clipped and "add.output.0" in result.clipped
    for key in ("down.output.0", "add.output.0"):
        observed, clip = result.clipped[key]
        assert observed > 100 and clip < 0.5 * observed
        assert sim.quantizers()[key].frozen
    assert result.error_after < result.error_before
    assert after < 0.5 * before, (before, after)

    exported = sim.export(tmp_path)
    runner = OnnxRunner(exported.qdq_onnx, threads=1)
    ort = torch.from_numpy(runner.run([held_out[:8].numpy()])[0])
    agreement = torch.nn.functional.cosine_similarity(ort.flatten(), simulated[:8].flatten(), dim=0)
    assert float(agreement) > 0.9999
    assert abs(_error(ort, reference[:8]) - _error(simulated[:8], reference[:8])) < 0.1 * after


def test_a_model_without_outliers_keeps_its_ranges():
    """Given a block without a massive activation, When clipping, Then no quantizer qualifies and every
    encoding is unchanged."""
    from core.quantsim import QuantSim

    torch.manual_seed(1)
    model = _PostNormBlock().eval()
    calib = [torch.randn(8, 64, 32) for _ in range(2)]
    sim = QuantSim(model, (calib[0],), scheme="min_max")
    sim.compute_encodings(calib)
    scales = {k: q.scale.clone() for k, q in sim.activation_quantizers().items() if q.is_calibrated}
    result = clip_activation_outliers(sim, calib)
    assert result.clipped == {}
    assert all(torch.equal(scales[k], q.scale) for k, q in sim.activation_quantizers().items() if k in scales)


def test_bad_config_and_uncalibrated_sim_are_rejected():
    from core.quantsim import QuantSim

    with pytest.raises(ConfigError, match="fractions"):
        OutlierClipConfig(fractions=(0.5, 1.5))
    with pytest.raises(ConfigError, match="ratio"):
        OutlierClipConfig(ratio=0.5)
    model, calib, _ = _model_and_data()
    sim = QuantSim(model, (calib[0],))
    with pytest.raises(ConfigError, match="compute_encodings"):
        clip_activation_outliers(sim, calib)
