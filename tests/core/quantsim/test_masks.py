"""Additive attention masks: masking sentinels stay out of ranges; the mask survives quantization.

Given a transformer-style attention whose mask is built from an integer input as
``where(mask, 0, finfo.min)`` and added to the scores, quantizing that add with min-max over
the raw values would give an 8-bit step of ~1e36 and erase every score.
"""

from __future__ import annotations

import torch
from torch import nn

from core.quant import QuantSpec, make_range_setter
from core.quantsim import QuantSim


class MaskedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(16, 16)
        self.k = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(1, 2)
        additive = torch.where(mask[:, None, :].bool(), 0.0, torch.finfo(torch.float32).min)
        return torch.softmax(scores + additive, dim=-1)


def test_range_setter_ignores_masking_sentinels_and_keeps_softmax_headroom() -> None:
    x = torch.randn(4, 32)
    x[:, 20:] = torch.finfo(torch.float32).min
    for scheme in ("min_max", "sqnr", "percentile"):
        rs = make_range_setter(scheme, QuantSpec(bitwidth=8))
        rs.observe(x)
        enc = rs.compute()
        real = x[:, :20]
        assert float(enc.max[0]) >= float(real.max()) * 0.5
        assert float(enc.min[0]) > -1e6, scheme  # not stretched to finfo.min
        assert float(enc.max[0] - enc.min[0]) >= 20.0 - 1e-3  # masked values saturate 20 below the top


def test_mask_construction_unquantized_and_masked_attention_survives() -> None:
    torch.manual_seed(0)
    model = MaskedAttention().eval()
    x = torch.randn(8, 6, 16)
    mask = torch.ones(8, 6, dtype=torch.int64)
    mask[:, 4:] = 0
    sim = QuantSim(model, (x, mask), scheme="min_max")
    sim.compute_encodings([(x, mask)])
    # The mask's Where is quantized as aimet-onnx quantizes it; the range setter keeps the grid
    # on the real values (0) with the sentinel saturating well below, so the mask survives.
    where = [n for n, p in sim.plans.items() if p.op_type == "Where"]
    assert where and all(sim.plans[n].output is not None for n in where)
    for n in where:
        enc = sim.quantizers()[f"{n}.output.0"].encoding
        assert enc is not None and -1e6 < float(enc.min[0]) <= -10.0 and float(enc.max[0]) >= 0.0
    adds = [p for p in sim.plans.values() if p.op_type == "Add"]
    assert adds and all(all(s is None for s in p.inputs) for p in adds)
    with torch.no_grad():
        ref, out = model(x, mask), sim.model(x, mask)
    # Masked keys get (almost) no attention, as in FP32, and the real scores keep their resolution.
    assert float(out[..., 4:].max()) < 1e-3
    cos = torch.nn.functional.cosine_similarity(ref.flatten(1), out.flatten(1), dim=1).mean()
    assert float(cos) > 0.98
