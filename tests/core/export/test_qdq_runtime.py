"""QDQ ONNX in ONNX Runtime against the simulation: agreement on the trained digits classifier,
and the 16-bit, 4-bit, float16 and per-block paths run in ORT and follow the sim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from core.export import compare_outputs, export_sim, run_onnx
from core.quantsim import QuantSim
from examples.digits.model import DigitsCNN
from tests.core.export.sample_nets import TransformerBlock

BATCH = 50


def _sim_vs_ort(sim: QuantSim, qdq_path: Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    sim_out, ort_out = [], []
    with torch.no_grad():
        for start in range(0, len(x), BATCH):
            batch = x[start : start + BATCH]
            sim_out.append(sim(batch).numpy())
            ort_out.append(run_onnx(qdq_path, [batch], threads=1)[0])
    return np.concatenate(sim_out), np.concatenate(ort_out)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_w8a8_qdq_in_ort_agrees_with_simulation(trained_digits, per_channel: bool, tmp_path: Path) -> None:
    """Given the trained digits CNN at W8A8, the QDQ model in ORT gives the sim's logits (SQNR ≥ 30 dB, top-1 ≥ 99%)."""
    calib = trained_digits.calib
    sim = QuantSim(trained_digits.model, (calib[:BATCH],), per_channel=per_channel)
    sim.compute_encodings([calib[i : i + BATCH] for i in range(0, len(calib), BATCH)])
    result = export_sim(sim, tmp_path, output_names=["logits"])
    assert result.qdq_onnx is not None
    graph = onnx.load(result.qdq_onnx).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 5
    dq_weights = [
        n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0].endswith(".weight")
    ]
    assert len(dq_weights) == 4
    assert all(any(a.name == "axis" for a in n.attribute) == per_channel for n in dq_weights)
    sim_logits, ort_logits = _sim_vs_ort(sim, result.qdq_onnx, trained_digits.eval_x)
    agreement = compare_outputs(sim_logits, ort_logits)
    assert agreement["top1_agreement"] >= 0.99, agreement
    assert agreement["sqnr_db"] >= 30.0, agreement
    # Quantization is visible: the QDQ model is not the float model.
    with torch.no_grad():
        fp = trained_digits.model(trained_digits.eval_x[:BATCH]).numpy()
    assert compare_outputs(fp, ort_logits[:BATCH])["sqnr_db"] < agreement["sqnr_db"]
    accuracy = float((ort_logits.argmax(1) == trained_digits.eval_y).mean())
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        ({"param_bw": 4, "output_bw": 16}, "uint16 activations, 4-bit weights in int8"),
        ({"act_dtype": "float", "output_bw": 16}, "float16 activations as Cast pairs"),
    ],
    ids=["w4a16", "fp16_activations"],
)
def test_wide_and_float_paths_follow_the_sim(kwargs: dict, expect: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8)
    sim = QuantSim(DigitsCNN().eval(), (x,), **kwargs)
    sim.compute_encodings([x])
    result = export_sim(sim, tmp_path)
    assert result.qdq_onnx is not None
    model = onnx.load(result.qdq_onnx)
    if kwargs.get("act_dtype") == "float":
        assert any(n.op_type == "Cast" for n in model.graph.node), expect
    else:
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21, expect
        w = next(t for t in model.graph.initializer if t.name == "conv1.weight_quantized")
        codes = onnx.numpy_helper.to_array(w)
        assert codes.dtype == np.int8 and codes.min() >= -8 and codes.max() <= 7, expect
    sim_out, ort_out = _sim_vs_ort(sim, result.qdq_onnx, x)
    assert compare_outputs(sim_out, ort_out)["sqnr_db"] >= 40.0


def test_per_block_weights_run_in_ort(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 5, 16)
    sim = QuantSim(TransformerBlock().eval(), (x,), param_bw=4, block_size=8)
    sim.compute_encodings([x])
    assert any(q.spec.granularity == "per_block" for q in sim.quantizers().values())
    result = export_sim(sim, tmp_path, encoding_version="2.0.0")
    assert result.qdq_onnx is not None
    blocked = [
        n
        for n in onnx.load(result.qdq_onnx).graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
    ]
    assert blocked
    with torch.no_grad():
        ref = sim(x).numpy()
    assert compare_outputs(ref, run_onnx(result.qdq_onnx, [x])[0])["sqnr_db"] >= 40.0


def test_compare_outputs_metrics() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    same = compare_outputs(ref, ref)
    assert (
        same["sqnr_db"] == float("inf")
        and same["top1_agreement"] == 1.0
        and same["cosine"] == pytest.approx(1.0)
    )
    noisy = compare_outputs(ref, ref + 0.1)
    expected = 10 * np.log10(np.sum(ref**2) / np.sum(np.full_like(ref, 0.01)))
    assert noisy["sqnr_db"] == pytest.approx(expected)
    flipped = compare_outputs(ref, ref[::-1])
    assert flipped["top1_agreement"] == 0.0 and flipped["cosine"] < 1.0
