"""aimet-onnx 2.42 loads lowbit's encodings of GPT-2's layers as a Python module in strict mode.

Given a module built like GPT-2 (token and position embeddings added; ``Conv1D`` projections, i.e.
``torch.addmm(bias, x, weight)`` with the weight stored (in, out); an ``lm_head`` whose weight *is* the
token embedding table), when lowbit quantizes it through ``QuantSim(module, example)`` and exports it,
then aimet-onnx builds its QuantizationSimModel from the exported file and its strict loader accepts
lowbit's encodings, and both simulate the same outputs:

- ``Conv1D`` is a layer (a Gemm to aimet-onnx): a symmetric weight quantizer, no bias quantizer, and
  no activation quantizer on the weight or the bias as on math between two tensors;
- the tied weight is written as two initializers (aimet-onnx refuses one initializer read by a Gather
  and a Gemm), each with its own encoding;
- an embedding table is quantized as an activation (asymmetric, at the activation width), and the
  Gather's output is not quantized again, as aimet-onnx does; the position rows reach the sum through
  a Cast to their own dtype, which moves no value.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from core.export.runtime import compare_outputs
from core.quantsim import QuantSim

VOCAB, SEQ, HIDDEN = 40, 8, 16


class Conv1D(nn.Module):
    """transformers' ``Conv1D``: a linear layer with its weight stored (in, out)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.2)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return out.view(*x.shape[:-1], -1)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(VOCAB, HIDDEN)
        self.wpe = nn.Embedding(SEQ, HIDDEN)
        self.fc = Conv1D(HIDDEN, HIDDEN)
        self.act = nn.Tanh()
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT2LMHeadModel does

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[-1]).unsqueeze(0)
        h = self.wte(ids) + self.wpe(positions).to(torch.float32)
        return self.lm_head(self.act(self.fc(h)))


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_aimet_strict_loads_conv1d_and_tied_embedding(aimet, tmp_path, version):
    ids = torch.randint(0, VOCAB, (4, SEQ), generator=torch.Generator().manual_seed(1))
    cfg = aimet.configs / "default_config.json"
    sim = QuantSim(TinyLM().eval(), (ids,), config=cfg)
    sim.compute_encodings([(ids,)])
    sim.export(tmp_path, encoding_version=version, qdq=False)

    model = onnx.load(tmp_path / "model.onnx")
    initializers = {t.name for t in model.graph.initializer}
    assert {"wte.weight", "lm_head.weight", "fc.weight"} <= initializers
    asim = aimet.QuantizationSimModel(model, config_file=str(cfg))
    assert aimet.load(asim, str(tmp_path / "model.encodings"), strict=True) == []
    assert asim.qc_quantize_op_dict["fc.weight"].use_symmetric_encodings
    assert not asim.qc_quantize_op_dict["wte.weight"].use_symmetric_encodings
    theirs = asim.session.run(None, {asim.session.get_inputs()[0].name: ids.numpy()})[0]
    with torch.no_grad():
        ours = sim.model(ids).numpy()
    agreement = compare_outputs(ours, theirs)
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 35.0, agreement
