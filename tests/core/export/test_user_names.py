"""Exports of an imported ONNX model keep the user's tensor names (activations and parameters)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper
from torch import nn

from core.export import export_sim
from core.io import load_model
from core.quantsim import QuantSim
from tests.core.io.onnx_builders import initializer, save_model, tensor_input


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(self.conv(x)) + self.conv(x)
        return self.fc(y.mean((2, 3)))


def _tensor_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    return (
        {t.name for t in graph.initializer}
        | {i.name for i in graph.input}
        | {name for node in graph.node for name in node.output}
    )


def _encoding_names(path) -> list[str]:
    doc = json.loads(path.read_text())
    return [e["name"] for e in doc["activation_encodings"]] + [e["name"] for e in doc["param_encodings"]]


def _export(tmp_path, path):
    loaded = load_model(path)
    sim = QuantSim(loaded)
    gen = torch.Generator().manual_seed(0)
    shape = loaded.example_inputs[0].shape
    sim.compute_encodings([torch.randn(4, *shape[1:], generator=gen) for _ in range(2)])
    return sim, export_sim(sim, tmp_path / "out")


def test_encodings_are_keyed_by_the_uploaded_graphs_names(tmp_path):
    """Given a torch.onnx export (names like onnx::Conv_12 and /conv/conv.2/Clip_output_0), when quantized
    and exported, then every encoding names a tensor of the uploaded file, in model.onnx and the QDQ model
    too, the QDQ model runs at batch 3, and the encodings load back into a fresh sim."""
    torch.manual_seed(0)
    path = tmp_path / "user.onnx"
    torch.onnx.export(
        _Net().eval(), (torch.randn(2, 3, 8, 8),), path, dynamo=False, opset_version=17,
        input_names=["image"], output_names=["scores"], dynamic_axes={"image": {0: "n"}, "scores": {0: "n"}},
    )  # fmt: skip
    uploaded = _tensor_names(onnx.load(path))
    sim, result = _export(tmp_path, path)
    names = _encoding_names(result.encodings)
    assert names and set(names) <= uploaded
    assert any(name.startswith("onnx::Conv") for name in names)  # the folded weights kept their odd names
    assert set(names) <= _tensor_names(onnx.load(result.onnx))
    qdq = onnx.load(result.qdq_onnx)
    assert set(names) <= _tensor_names(qdq)
    session = ort.InferenceSession(str(result.qdq_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (out,) = session.run(None, {"image": x})
    with torch.no_grad():
        ref = sim.model(torch.from_numpy(x)).numpy()
    assert out.shape == (3, 5)
    assert float(np.abs(out - ref).max()) < 0.1 * float(np.abs(ref).max())
    fresh = QuantSim(load_model(path))
    fresh.load_encodings(result.encodings)
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(torch.from_numpy(x)), sim.model(torch.from_numpy(x)))


def test_a_weight_read_by_two_layers_is_not_renamed_twice(tmp_path):
    """One initializer feeding two MatMuls maps to two parameters: neither takes the user's name."""
    nodes = [
        helper.make_node("MatMul", ["x", "shared"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "shared"], ["y"], name="second"),
    ]
    w = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    path = save_model(
        tmp_path / "tied.onnx", nodes, [tensor_input("x", ["N", 6])], ["y"], [initializer("shared", w)]
    )
    _, result = _export(tmp_path, path)
    names = _encoding_names(result.encodings)
    assert "shared" not in names
    assert "r" in names  # the activation between them keeps its name
    assert len(set(names)) == len(names)
