"""Graph outputs with numeric names (e.g. '272', as other exporters write them) survive export and reload."""

from __future__ import annotations

import numpy as np
import onnx

from core.export.runtime import OnnxRunner
from core.io import load_data, load_model
from core.quantsim import QuantSim


def test_numeric_output_name_exports_and_reloads(digits_artifacts, tmp_path):
    model = onnx.load(digits_artifacts.model_onnx)
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["272" if o == old else o for o in node.output]
    model.graph.output[0].name = "272"
    path = tmp_path / "numeric.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert loaded.output_names == ["272"]
    sim = QuantSim(loaded)
    sim.compute_encodings(load_data(digits_artifacts.calib_data, loaded.input_names).for_model(loaded))
    result = sim.export(tmp_path / "out")
    runner = OnnxRunner(result.qdq_onnx)
    assert [o.name for o in runner.session.get_outputs()] == ["272"]
    x = np.load(digits_artifacts.eval_data)["input"][:8]
    assert runner.run([x])[0].shape == (8, 10)
    assert "272" in result.encodings.read_text()
    QuantSim(load_model(path)).load_encodings(result.encodings, strict=True)
