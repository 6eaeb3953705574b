"""The evaluate stage: the drop is the deployed model's, agreement with the sim is stored, and a
warning comes with a disagreement (ONNX Runtime on the exported QDQ model as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from core.io.data import CalibrationData
from core.quantsim import QuantSim
from core.runtime_verdict import disagrees
from tests.core.test_autoquant import _data, _model
from worker.pipeline.evaluate import evaluate


@pytest.mark.parametrize("config", ["default", "onnxruntime_cpu"])
def test_metrics_carry_the_deployed_drop_and_runtime_agreement(tmp_path, config):
    x = _data()
    labels = np.arange(len(x)) % 4
    sim = QuantSim(_model().eval(), (x[:1],), config=config, param_bw=4)
    sim.compute_encodings([x])
    result = sim.export(tmp_path)
    data = CalibrationData({"input": x.numpy()}, labels=labels)
    metrics = evaluate(sim, sim.fp_model, data, result.qdq_onnx, "cpu", None)
    assert metrics["drop"] == pytest.approx(metrics["fp32"] - metrics["onnxruntime"])
    assert metrics["sim_drop"] == pytest.approx(metrics["fp32"] - metrics["sim"])
    agreement = metrics["sim_vs_onnxruntime"]
    assert set(agreement) == {"top1_agreement", "sqnr_db"}
    assert ("warning" in metrics) == disagrees(agreement)
    if config == "onnxruntime_cpu":
        assert "warning" not in metrics, metrics
