"""aimet-onnx 2.42 loads lowbit's encodings of GPT-2-style attention in strict mode.

Given an ONNX attention block as torch's dynamo exporter writes GPT-2's (one ``Gemm`` with its weight
stored (in, out), ``transB=0``, projecting q, k and v at once; a ``Split`` into the three; Q·Kᵀ, a
Softmax, P·V; a Tanh as in GPT-2's GELU), when lowbit quantizes it with one of AIMET's config files and
exports it, then aimet-onnx's strict loader accepts the file and simulates what lowbit does:

- a Split hands out its input's values: aimet-onnx leaves its outputs unquantized and quantizes the
  Gemm output in front of it, so lowbit puts no quantizer on q, k or v past the Split;
- V reaches P·V as the second input of a dynamic MatMul: aimet-onnx gives the quantizer behind it,
  through the Split, the weight symmetry — here the Gemm's output quantizer;
- HTP's Tanh range is fixed to [-1, 1], centred on 0: aimet-onnx makes that quantizer symmetric.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from core.export.runtime import compare_outputs
from core.io import load_model
from core.quantsim import QuantSim
from tests.core.io.onnx_builders import initializer, save_model, tensor_input

SEQ, HIDDEN = 6, 16


def _attention_onnx(path):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((HIDDEN, 3 * HIDDEN)) * 0.3).astype(np.float32)  # stored (in, out)
    b = (rng.standard_normal(3 * HIDDEN) * 0.1).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("Gemm", ["x", "w", "b"], ["qkv"], name="c_attn"),
        n("Split", ["qkv"], ["q", "k", "v"], axis=1, num_outputs=3, name="split"),
        n("Transpose", ["k"], ["kt"], perm=[1, 0], name="kt"),
        n("MatMul", ["q", "kt"], ["scores"], name="qk"),
        n("Softmax", ["scores"], ["p"], axis=-1, name="softmax"),
        n("MatMul", ["p", "v"], ["ctx"], name="pv"),
        n("Tanh", ["ctx"], ["y"], name="tanh"),
    ]
    inputs = [tensor_input("x", [SEQ, HIDDEN])]
    return save_model(path, nodes, inputs, ["y"], [initializer("w", w), initializer("b", b)], opset=18)


@pytest.mark.parametrize("config", ["default_config.json", "htp_quantsim_config_v73.json"])
def test_aimet_strict_loads_split_attention(aimet, tmp_path, config):
    loaded = load_model(_attention_onnx(tmp_path / "attention.onnx"))
    x = torch.randn(SEQ, HIDDEN, generator=torch.Generator().manual_seed(0))
    cfg = aimet.configs / config
    sim = QuantSim(loaded, (x,), config=cfg)
    sim.compute_encodings([(x,)])
    sim.export(tmp_path / "out", encoding_version="1.0.0", qdq=False)

    asim = aimet.QuantizationSimModel(onnx.load(tmp_path / "out" / "model.onnx"), config_file=str(cfg))
    assert aimet.load(asim, str(tmp_path / "out" / "model.encodings"), strict=True) == []
    q = asim.qc_quantize_op_dict
    assert not any(q[t].enabled for t in ("q", "k", "v") if t in q)  # nothing past the Split
    assert q["qkv"].enabled and q["qkv"].use_symmetric_encodings  # V's grid, a MatMul "weight"
    theirs = asim.session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ours = sim.model(x).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["sqnr_db"] >= 35.0, agreement
