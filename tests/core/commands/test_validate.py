"""`lowbit validate` and `lowbit quantize` reach the same verdict on the same .pt2, float ops named.

Given a .pt2 written by torch 2.13 with a dynamic batch whose model (conv, BN, ReLU6, linear) has an op
without a quantized module (cumsum), when it is validated and quantized from the command line and
checked as a service job checks it (core.graph.check_model on LoadedModel.graph_source), then all three
accept it, capture it with torch.export, and name the same op left in float.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from core.cli import main
from core.graph import check_model
from core.io import load_model


class _WithCumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.relu6(self.bn(self.conv(x))).mean((2, 3))
        return torch.cumsum(self.fc(y), dim=-1)


def test_validate_quantize_and_job_check_agree_on_a_dynamic_pt2(tmp_path, capsys):
    torch.manual_seed(0)
    model = _WithCumsum().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32))

    assert main(["validate", str(path)]) == 0
    table = capsys.readouterr().out
    assert "model captured with torch.export: 1 op left in float: aten.cumsum" in table
    assert "core/graph" not in table  # fix-its name what the user can change

    assert main(["quantize", str(path), "--calib", str(calib), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["float_ops"] == ["aten.cumsum"]

    loaded = load_model(path)
    prepared, report = check_model(loaded.graph_source, loaded.example_inputs)
    assert prepared is not None and report.ok and report.capture == "torch.export"
    assert [i.op for i in report.float_ops] == ["aten.cumsum"]
