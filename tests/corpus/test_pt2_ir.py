""".pt2 files in the IRs torch.export writes: the training IR of ``export()`` and the inference IR of
``run_decompositions()`` (``aten.convolution``, ``_native_batch_norm_legit_no_training``, ``addmm``...).

Given the own MobileNetV2-style model (convs, depthwise convs, BatchNorm, ReLU6, residual adds, Linear)
exported with a dynamic batch, when each IR's file goes through load → validate → QuantSim → export, then
torch.export's own program is captured (no fx fallback), every op has a quantized module (none left in
float), Conv+BN+ReLU6 form supergroups as from the Python module, and the QDQ model runs in ONNX Runtime
at batch 3 close to the FP32 module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.export import OnnxRunner, export_sim
from core.graph.validator import check_model
from core.io import LoadedModel, load_model
from core.quantsim import QuantSim
from tests.corpus.mobilenet_style import MobileNetStyle


def _quantized(source: LoadedModel) -> tuple[QuantSim, object]:
    prepared, report = check_model(source.graph_source, source.example_inputs)
    assert prepared is not None and report.ok, report.issues
    sim = QuantSim(prepared, source.example_inputs, prepared=True)
    sim.use_io_of(source)
    gen = torch.Generator().manual_seed(1)
    sim.compute_encodings([torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2)])
    return sim, report


@pytest.mark.parametrize("ir", ["training", "inference"])
def test_pt2_in_either_ir_quantizes_like_the_module(tmp_path, ir):
    torch.manual_seed(0)
    model = MobileNetStyle().eval()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", max=64)}})
    if ir == "inference":
        program = program.run_decompositions()
        targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert "aten.convolution.default" in targets and "aten.conv2d.default" not in targets, targets
    path = tmp_path / f"{ir}.pt2"
    torch.export.save(program, str(path))

    sim, report = _quantized(load_model(path))
    assert report.capture == "torch.export"
    assert not report.float_ops, [(i.node, i.op) for i in report.float_ops]
    reference, _ = _quantized(LoadedModel.from_module(model, (x,), ["x"]))
    # The same quantizers as the module: Conv+BN+ReLU6 supergroups, nothing between a conv and its clamp.
    enabled = sorted(k.split(".", 1)[1] for k, q in sim.quantizers().items() if q.enabled)
    expected = sorted(k.split(".", 1)[1] for k, q in reference.quantizers().items() if q.enabled)
    assert len(enabled) == len(expected) and sorted(set(enabled)) == sorted(set(expected))

    result = export_sim(sim, tmp_path / "out")
    batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fp32 = model(batch).numpy().ravel()
    (got,) = OnnxRunner(result.qdq_onnx).run({"x": batch.numpy()})
    got = got.ravel()
    assert got.shape == fp32.shape == (30,)
    assert float(got @ fp32 / (np.linalg.norm(got) * np.linalg.norm(fp32))) > 0.99
