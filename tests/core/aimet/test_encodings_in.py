"""Encodings written by aimet-onnx come into lowbit: ``lowbit export MODEL.pt2 --encodings FILE``
accepts AIMET's 2.0.0 file (int32 bias entries included) computed on BN-folded weights, folds BN
itself, and the QDQ model it writes reproduces AIMET's simulated outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from core.cli import main as lowbit
from core.export.runtime import compare_outputs
from core.io import load_data, load_model
from core.quantsim import QuantSim


def _exact_qdq(path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # the QDQ arithmetic as written
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_aimet_written_encodings_reproduce_aimets_simulation(aimet, digits_artifacts, tmp_path):
    from aimet_onnx.batch_norm_fold import fold_all_batch_norms_to_weight

    cfg = aimet.configs / "default_config_per_channel.json"
    loaded = load_model(digits_artifacts.model_pt2)
    calib = load_data(digits_artifacts.calib_data, loaded.input_names).for_model(loaded)
    calib_x = next(iter(calib.batches(256)))[0].numpy().astype(np.float32)
    eval_x = np.load(digits_artifacts.eval_data)["input"][:300].astype(np.float32)
    # The user's .pt2 as an FP32 ONNX graph with lowbit's tensor names: what AIMET is given.
    sim = QuantSim(loaded, config=cfg)
    sim.compute_encodings([torch.from_numpy(calib_x)])
    sim.export(tmp_path / "fp32", qdq=False)

    # AIMET's own flow: fold BN into the weights, simulate, export 2.0.0 with int32 biases.
    model = onnx.load(tmp_path / "fp32" / "model.onnx")
    fold_all_batch_norms_to_weight(model)
    asim = aimet.QuantizationSimModel(model, config_file=str(cfg))
    name = asim.session.get_inputs()[0].name
    asim.compute_encodings(lambda session: session.run(None, {name: calib_x}))
    (tmp_path / "aimet").mkdir()
    asim.export(str(tmp_path / "aimet"), "aimet", encoding_version="2.0.0", export_int32_bias=True)
    encodings = tmp_path / "aimet" / "aimet.encodings"
    assert '"int32"' in encodings.read_text()  # AIMET's bias entries are in the file
    theirs = asim.session.run(None, {name: eval_x})[0]

    out = tmp_path / "lowbit"
    argv = ["export", str(digits_artifacts.model_pt2), "--encodings", str(encodings), "--out", str(out)]
    assert lowbit([*argv, "--config", str(cfg)]) == 0
    ours = _exact_qdq(out / "model_qdq.onnx", eval_x)
    agreement = compare_outputs(theirs, ours)
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 35.0, agreement


def test_a_name_mismatch_lists_both_sides(digits_artifacts, tmp_path, capsys):
    bad = tmp_path / "renamed.encodings"
    bad.write_text(
        '{"version": "2.0.0", "encodings": [{"name": "onnx::Conv_37", "output_dtype": "int8", "y_scale": 0.01}]}'
    )
    code = lowbit(
        ["export", str(digits_artifacts.model_pt2), "--encodings", str(bad), "--out", str(tmp_path)]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert "conv1.param.weight (tensor 'conv1.weight')" in err  # lowbit's side
    assert "names that match no quantizer of this sim: onnx::Conv_37" in err  # the file's side
