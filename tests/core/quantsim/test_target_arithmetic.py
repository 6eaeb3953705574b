"""The onnxruntime_cpu preset simulates what ONNX Runtime's CPU kernels compute.

Oracle: ONNX Runtime itself, with its default graph optimizations (QDQ fused into QLinearConv /
QGemm), on the exported QDQ model. The model is the demo's digits CNN after BN folding — the case
where ORT's u8×s8 16-bit pair sums saturate with full-range int8 weights on x86 without VNNI.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.export.runtime import OnnxRunner, compare_outputs
from core.graph import prepare_model
from core.ptq.bn_fold import fold_all_batch_norms
from core.quantsim import QuantSim
from core.quantsim.bias import ACCUMULATING_OP_TYPES
from examples.digits.model import DigitsCNN


@pytest.fixture(scope="module")
def folded_digits(digits_artifacts):
    from core.io.models import load_exported_program

    program = load_exported_program(digits_artifacts.model_pt2)
    model = DigitsCNN()
    model.load_state_dict(dict(program.state_dict), strict=False)
    calib = torch.from_numpy(np.load(digits_artifacts.calib_data)["input"])
    data = np.load(digits_artifacts.eval_data)
    gm = prepare_model(model.eval(), (calib[:1],))
    assert fold_all_batch_norms(gm) is not None
    return gm, calib, torch.from_numpy(data["input"][:300])


@pytest.mark.parametrize("param_bw", [8, 4])
def test_onnxruntime_cpu_preset_agrees_with_onnx_runtime(folded_digits, tmp_path, param_bw):
    gm, calib, eval_x = folded_digits
    sim = QuantSim(gm, (calib[:1],), config="onnxruntime_cpu", param_bw=param_bw, output_bw=8, prepared=True)
    sim.compute_encodings([calib])
    sim.export(tmp_path)
    with torch.no_grad():
        simulated = sim(eval_x).numpy()
    deployed = OnnxRunner(tmp_path / "model_qdq.onnx").run([eval_x.numpy()])[0]
    agreement = compare_outputs(simulated, deployed)
    assert agreement["top1_agreement"] >= 0.99, agreement
    assert agreement["sqnr_db"] >= 30.0, agreement

    # What the preset models: weights on ORT's reduce_range grid, biases on the int32 accumulator grid.
    for name, plan in sim.plans.items():
        module = sim.model.get_submodule(name)
        if plan.op_type not in ACCUMULATING_OP_TYPES:
            continue
        wq = module.param_quantizers["weight"]
        assert wq.spec.bitwidth == min(param_bw, 7)
        enc = wq.encoding
        shape = (-1,) + (1,) * (module.weight.dim() - 1)
        codes = torch.round(module.weight.detach() / enc.scale.reshape(shape))
        assert codes.abs().max() <= 64
    fc = sim.model.get_submodule("fc")
    x_scale = sim.model.get_submodule("pool").output_quantizers[0].encoding.scale
    steps = fc.bias.detach() / (x_scale * fc.param_quantizers["weight"].encoding.scale)
    assert torch.allclose(steps, steps.round(), atol=1e-3)
