"""Attention is simulated as the ONNX nodes the export writes where the target quantizes each node.

Given a model calling ``F.scaled_dot_product_attention`` with a fixed scale and a bool mask (how
transformers' BERT and GPT-2 reach it in a .pt2), when the config's target quantizes every node
output (``decomposed_ops: "per_node"``, AIMET's placement), then lowbit's sim holds the exporter's
nodes as modules — scaled Q and Kᵀ, the scores, the mask's fill, the masked scores, the softmax
and its NaN guard, P·V — each with an output quantizer calibrated like any other, the export writes
an encoding for each of those tensors, and ONNX Runtime running the exported QDQ model computes what
the sim computes. With a ``fused`` target (lowbit's default and onnxruntime_cpu presets) attention
stays one module with one output quantizer. The aimet-onnx oracle on corpus BERT and GPT-2 .pt2
files is tests/core/aimet/test_strict_corpus.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from core.export.reader import read_encodings_file
from core.export.runtime import compare_outputs
from core.graph import ops, prepare_model
from core.graph.attention import decompose_attention
from core.quantsim import QuantSim
from core.quantsim.config import load_config


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # x: (batch, heads=1, seq, 16)
        mask = keep[:, None, None, :] > 0.5  # bool, as transformers builds it for sdpa
        return self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.25))


def _inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(batch, 6)
    keep[::2, 4:] = 0.0  # padded positions in every other sample
    return torch.randn(batch, 1, 6, 16, generator=g) * 2, keep


def _sim(mode: str) -> QuantSim:
    torch.manual_seed(0)
    cfg = load_config("default")
    cfg = dataclasses.replace(cfg, target=dataclasses.replace(cfg.target, decomposed_ops=mode))
    sim = QuantSim(_Attention().eval(), _inputs(1, 0), config=cfg)
    sim.compute_encodings([_inputs(64, 1)])
    return sim


def _fused(gm: torch.fx.GraphModule) -> list[str]:
    return [n for n, m in gm.named_modules() if isinstance(m, ops.ScaledDotProductAttention)]


def test_decomposed_attention_computes_what_the_fused_op_computes():
    model = _Attention().eval()
    gm = prepare_model(model, _inputs(1, 0))
    assert _fused(gm)
    replaced = decompose_attention(gm)
    assert replaced and not _fused(gm)
    x = _inputs(8, 2)
    with torch.no_grad():
        torch.testing.assert_close(gm(*x), model(*x), rtol=1e-5, atol=1e-5)


def test_per_node_sim_quantizes_each_exported_attention_node_and_runs_as_ort_runs_the_qdq_model(tmp_path):
    sim = _sim("per_node")
    assert not _fused(sim.model)
    quantized = {name for name, plan in sim.plans.items() if plan.output is not None}
    nodes = ("mul_q", "mul_k", "matmul_qk", "mask_fill", "mask_add", "softmax", "nan_to_zero", "matmul_pv")
    for node in nodes:
        assert any(name.endswith(f"_{node}") for name in quantized), node
    result = sim.export(tmp_path, encoding_version="1.0.0")

    # Every float output of the exported attention nodes has an encoding (aimet-onnx's strict loader
    # expects one per node output), the mask's 0 and -inf fills included.
    graph = onnx.load(result.onnx).graph
    written = read_encodings_file(result.encodings).activations
    attention_ops = ("Mul", "MatMul", "Where", "Add", "Softmax")
    outputs = [n.output[0] for n in graph.node if n.op_type in attention_ops and "/attention_" in n.name]
    assert len(outputs) == len(nodes) and all(o in written for o in outputs), sorted(
        set(outputs) - set(written)
    )
    fills = [n.input[1:] for n in graph.node if n.op_type == "Where"]
    assert fills and all(i in written for pair in fills for i in pair if i)

    x = _inputs(16, 3)
    with torch.no_grad():
        simulated = sim(*x).numpy()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(result.qdq_onnx), options, providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), x, strict=True)}
    agreement = compare_outputs(simulated, session.run(None, feed)[0])
    assert agreement["sqnr_db"] >= 80.0, agreement  # measured: identical outputs

    # ... and it is not the fused simulation: the roundings of scores and softmax change the outputs.
    with torch.no_grad():
        fused = _sim("fused")(*x).numpy()
    assert np.isfinite(simulated).all() and compare_outputs(fused, simulated)["sqnr_db"] < 60.0


def test_fused_target_keeps_attention_one_module():
    sim = _sim("fused")
    assert _fused(sim.model) and sim.plans[_fused(sim.model)[0]].output is not None
