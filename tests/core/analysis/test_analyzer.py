"""QuantAnalyzer: every output file with real content, and a deliberately damaged layer ranked first."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from torch import nn

from core.analysis import OutputAgreement, QuantAnalyzer
from core.errors import CancelledError
from core.quant import Encoding
from core.quantsim import QuantSim


def _sim() -> tuple[QuantSim, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    ).eval()
    x = torch.randn(64, 3, 6, 6)
    sim = QuantSim(torch.fx.symbolic_trace(model), (x[:2],), prepared=True, param_bw=8, output_bw=8)
    sim.compute_encodings(x.split(16))
    return sim, x


def _damage(sim: QuantSim, key: str) -> None:
    """Give one weight quantizer a grid 64x too coarse: that layer alone ruins the output."""
    q = sim.quantizers()[key]
    enc = q.encoding
    q.set_encoding(Encoding(enc.spec, enc.scale * 64, enc.offset))
    q.freeze()


def test_analyzer_writes_every_file_and_ranks_the_damaged_layer_first(tmp_path):
    sim, x = _sim()
    _damage(sim, "2.param.weight")
    stages: list[str] = []
    result = QuantAnalyzer(sim, x.split(16), per_quantizer=True).analyze(
        tmp_path, progress=lambda stage, _f: stages.append(stage)
    )
    assert result.ranking[0]["layer"] == "2"
    assert result.ranking[0]["action"] in ("higher_bitwidth", "per_channel", "cle")
    assert result.costly_quantizers(1)[0][0] == "2.param.weight"
    g = result.global_metrics
    assert g["fp32"] == pytest.approx(1.0, abs=1e-6)
    assert g["quantized"] < g["activations_only"] and g["weights_only"] < g["activations_only"]
    assert result.per_layer["2"]["all_but_this"] > result.per_layer["0"]["all_but_this"]
    assert result.layer_error["0"]["sqnr_db"] > result.layer_error["2"]["sqnr_db"]
    assert stages[0] == "global" and stages[-1] == "done"

    for name in (
        "analysis.json",
        "sensitivity.json",
        "ranges.json",
        "layer_error.json",
        "ranking.json",
        "histograms.json",
    ):
        payload = json.loads((tmp_path / name).read_text())
        assert payload, name
    ranges = json.loads((tmp_path / "ranges.json").read_text())
    assert set(ranges["weights"]) == {"0.param.weight", "2.param.weight", "5.param.weight"}
    conv0 = sim.model.get_submodule("0").weight.detach()
    assert ranges["weights"]["0.param.weight"]["min"] == pytest.approx(float(conv0.min()))
    assert len(ranges["activations"]) >= 3
    hist = json.loads((tmp_path / "histograms.json").read_text())
    assert sum(hist["2.param.weight"]["counts"]) == sim.model.get_submodule("2").weight.numel()
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) >= 5 + len(hist)
    for png in pngs:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, png.name
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 5 + len(hist)
    assert "http://" not in report and "https://" not in report and "<script" not in report
    assert "Layers to look at first" in report and "2.param.weight" in report


def test_analyzer_uses_the_eval_function_and_restores_enabled_flags(tmp_path):
    sim, x = _sim()
    labels = sim.fp_model(x).argmax(1)
    sim.set_enabled(False, pattern="5")
    before = {k: q.enabled for k, q in sim.quantizers().items()}
    calls = []

    def accuracy(model: nn.Module) -> float:
        calls.append(1)
        with torch.no_grad():
            return float((model(x).argmax(1) == labels).float().mean())

    result = QuantAnalyzer(sim, x.split(32), eval_fn=accuracy).analyze(tmp_path)
    assert result.metric_name == "eval_fn" and result.global_metrics["fp32"] == 1.0
    assert "5" not in result.per_layer and len(calls) == 4 + 2 * len(result.per_layer)
    assert {k: q.enabled for k, q in sim.quantizers().items()} == before


def test_label_free_sqnr_metric_and_cancellation(tmp_path):
    sim, x = _sim()
    metric = OutputAgreement(sim.fp_model, [(x,)], metric="sqnr")
    assert metric(sim.fp_model) == 200.0 and 10 < metric(sim.model) < 200
    with pytest.raises(CancelledError):
        QuantAnalyzer(sim, [x]).analyze(tmp_path, cancel=lambda: True)
