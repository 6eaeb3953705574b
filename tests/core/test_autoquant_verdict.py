"""AutoQuant's verdict goes by the model that ships when a deployed score is given.

The deployed score of the real pipeline is core.runtime_verdict.deployed_scorer (the exported QDQ
model in ONNX Runtime); it is checked here against ONNX Runtime run directly on the exported file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.autoquant import autoquant
from core.export.runtime import OnnxRunner
from core.io.data import CalibrationData
from core.ptq.adaround import AdaroundConfig
from core.quantsim import QuantSim
from core.runtime_verdict import deployed_scorer, runtime_warning
from tests.core.test_autoquant import ONE_SCHEME, _data, _model


def test_a_target_the_sim_meets_and_the_deployed_model_misses_is_missed(tmp_path):
    """Given a drop the sim stays within, When the deployed model scores 0.05 below the sim,
    Then no stage meets the target, the stages keep both scores, and the message says missed."""
    deployed: list[float] = []

    def deployed_score(sim):
        # Stand-in for a runtime that loses 0.05 against the simulation (the sim's own metric minus 0.05).
        from core.autoquant import label_free_metric

        score = label_free_metric(sim.fp_model, [(_data(),)])(sim.model) - 0.05
        deployed.append(score)
        return score

    kwargs = dict(allowed_accuracy_drop=0.03, scheme_candidates=ONE_SCHEME, mixed_precision=False,
                  adaround=AdaroundConfig(num_iterations=5, num_samples=16))  # fmt: skip
    result = autoquant(_model(), _data(), deployed_score=deployed_score, out_dir=tmp_path, **kwargs)
    assert not result.target_met
    assert "not met" in result.message
    bn_fold = next(s for s in result.stages if s.name == "bn_fold")
    assert bn_fold.status == "below"
    # The sim alone meets the target at the first stage; the deployed model does not.
    assert bn_fold.details["sim_score"] >= result.target > bn_fold.details["deployed_score"] == bn_fold.score
    assert deployed


def test_deployed_scorer_is_onnx_runtime_on_the_exported_model(tmp_path):
    x = _data()
    labels = np.arange(len(x)) % 4
    data = CalibrationData({"input": x.numpy()}, labels=labels)
    sim = QuantSim(_model().eval(), (x[:1],), config="onnxruntime_cpu")
    sim.compute_encodings([x])
    sim.export(tmp_path)
    ort = OnnxRunner(tmp_path / "model_qdq.onnx").run([x.numpy()])[0]
    assert deployed_scorer(data)(sim) == pytest.approx(float((ort.argmax(1) == labels).mean()))
    label_free = CalibrationData({"input": x.numpy()})
    with torch.no_grad():
        ref = sim.fp_model(x).numpy().astype(np.float64)
    cos = (ref * ort).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(ort, axis=1))
    assert deployed_scorer(label_free)(sim) == pytest.approx(float(cos.mean()), abs=1e-5)


def test_warning_names_the_saturation_and_the_bias_causes():
    bad = {"top1_agreement": 0.97, "sqnr_db": 12.0}
    saturation = runtime_warning(bad, weight_bits=8, max_weight_bits=None, bias_int32=False, vnni=False)
    assert saturation is not None and "VNNI" in saturation and "onnxruntime_cpu" in saturation
    bias = runtime_warning(bad, weight_bits=4, max_weight_bits=None, bias_int32=False, vnni=False)
    assert bias is not None and "int32" in bias
    assert runtime_warning({"top1_agreement": 1.0, "sqnr_db": 45.0}, weight_bits=8, max_weight_bits=None,
                           bias_int32=False, vnni=False) is None  # fmt: skip
