"""Quantizers around grid-preserving ops sit where aimet-onnx places them, and lowbit reads its own file back.

Given a net that pads its input with zeros and max-pools a ReLU's output, when lowbit quantizes it with
AIMET's default config and exports, then the file encodes the model input (not the Pad's output, which
the first conv reads) and no MaxPool output (its values are on the ReLU's grid); and a fresh sim loads that file strictly, bit for bit, computing what the exporting sim computed.
"""

from __future__ import annotations

import json

import onnx
import torch
from torch import nn
from torch.nn import functional as F

from core.export import export_sim, load_encodings
from core.quantsim import QuantSim

X = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class PadPoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.relu(self.conv(F.pad(x, (1, 1, 1, 1)))))
        return self.fc(y.flatten(1))


def test_pad_and_max_pool_quantizers_are_aimets_and_the_file_reads_back(tmp_path) -> None:
    sim = QuantSim(PadPoolNet().eval(), (X,), config="default")
    assert sim.plans["pool"].output is None  # MaxPool: grid-preserving, no output quantizer
    sim.compute_encodings([X])
    result = export_sim(sim, tmp_path, encoding_version="1.0.0", qdq=False)
    names = {e["name"] for e in json.loads(result.encodings.read_text())["activation_encodings"]}
    graph = onnx.load(result.onnx).graph
    pad = next(n for n in graph.node if n.op_type == "Pad")
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    assert "input" in names and pad.output[0] not in names  # moved in front of the Pad
    fill = pad.input[2] if len(pad.input) > 2 else ""
    assert not fill or fill in names  # a written fill value gets the encoding AIMET places on it
    assert pool.output[0] not in names and pool.input[0] in names

    fresh = QuantSim(PadPoolNet().eval(), (X,), config="default")
    load_encodings(fresh, result.encodings, strict=True)
    for key, q in sim.quantizers().items():
        if q.enabled:
            assert fresh.quantizers()[key].encoding.equals(q.encoding), key
    with torch.no_grad():
        assert torch.equal(fresh(X), sim(X))
