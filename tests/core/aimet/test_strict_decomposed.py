"""aimet-onnx simulates lowbit's export of a decomposed activation exactly as lowbit does.

Given Linear → activation → Linear, where the activation is one the opset-17 export writes as a
chain of nodes (GELU erf and tanh forms, SiLU, Mish), when lowbit quantizes it with one of AIMET's
config files (target ``decomposed_ops: per_node``: every node output rounded) and exports, then
aimet-onnx loads the file strictly — the chain's intermediates, its scalar constants and, on HTP,
the fixed Sigmoid [0, 1] and symmetric Tanh [-1, 1] ranges included — and its outputs equal
lowbit's (no rounding of the chain left out on either side).
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from core.export.runtime import compare_outputs
from core.quantsim import QuantSim

ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": lambda: nn.SiLU(),
    "mish": lambda: nn.Mish(),
}


@pytest.mark.parametrize("config", ["default_config.json", "htp_quantsim_config_v73.json"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_aimet_onnx_simulates_lowbits_decomposed_activation_as_lowbit_does(aimet, tmp_path, act, config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), ACTIVATIONS[act](), nn.Linear(64, 10)).eval()
    x = torch.randn(256, 16) * 2
    cfg = aimet.configs / config
    sim = QuantSim(model, (x[:1],), config=cfg)
    sim.compute_encodings([x[:128]])
    sim.export(tmp_path, qdq=False)

    asim = aimet.QuantizationSimModel(onnx.load(tmp_path / "model.onnx"), config_file=str(cfg))
    assert aimet.load(asim, str(tmp_path / "model.encodings"), strict=True) == []
    theirs = asim.session.run(None, {"input": x[128:].numpy()})[0]
    with torch.no_grad():
        ours = sim(x[128:]).numpy()
        fp32 = model(x[128:]).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 60.0, agreement
    assert compare_outputs(fp32, ours)["sqnr_db"] < 60.0  # quantized on both sides, not FP32 twice
