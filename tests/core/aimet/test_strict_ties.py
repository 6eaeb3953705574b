"""A Concat input that feeds nothing else shares the Concat's output quantizer, as aimet-onnx ties them.

Given a net that concatenates a small-range conv output (read only by the Concat) with a large-range
one that a residual Add also reads, when lowbit quantizes it with AIMET's default config, then the
first conv's output quantizer is the Concat's (one object, one encoding), the second keeps its own,
and aimet-onnx loads the export strictly and computes exactly what lowbit computes. Without the tie
lowbit would round the first conv's output on its own finer grid before the Concat's.
"""

from __future__ import annotations

import onnx
import torch
from torch import nn

from core.export.runtime import compare_outputs
from core.quantsim import QuantSim


class ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.small = nn.Conv2d(3, 4, 1)
        self.large = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.small.weight.mul_(0.1)
            self.large.weight.mul_(4.0)
        self.mix = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.small(x), self.large(x)
        return self.mix(torch.cat([a, b], 1)) + b


def test_concat_inputs_are_tied_as_aimet_onnx_ties_them(aimet, tmp_path):
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    config = aimet.configs / "default_config.json"
    sim = QuantSim(ConcatNet().eval(), (x[:2],), config=config)
    (cat,) = [name for name, plan in sim.plans.items() if plan.op_type == "Concat"]
    assert sim.plans[cat].shares == ["small.output.0"]
    quantizers = sim.quantizers()
    assert quantizers["small.output.0"] is quantizers[f"{cat}.output.0"]
    assert quantizers["large.output.0"] is not quantizers[f"{cat}.output.0"]
    sim.compute_encodings([x[:4], x[4:]])
    assert quantizers["small.output.0"].encoding.equals(quantizers[f"{cat}.output.0"].encoding)

    sim.export(tmp_path, encoding_version="1.0.0", qdq=False)
    asim = aimet.QuantizationSimModel(onnx.load(tmp_path / "model.onnx"), config_file=str(config))
    assert aimet.load(asim, str(tmp_path / "model.encodings"), strict=True) == []
    probe = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    theirs = asim.session.run(None, {asim.session.get_inputs()[0].name: probe.numpy()})[0]
    with torch.no_grad():
        ours = sim.model(probe).numpy()
    assert compare_outputs(ours, theirs)["sqnr_db"] == float("inf")
