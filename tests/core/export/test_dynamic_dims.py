"""Dynamic dimensions of the user's file (batch and sequence) stay dynamic in model.onnx and model_qdq.onnx.

The model computes its reshape targets from the input's shape (as attention layers do), so a size the
export baked in shows as an ONNX Runtime failure or a wrong result at another batch size or length.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from core.export import export_sim
from core.io import load_model
from core.quantsim import QuantSim

_SIZES = ((1, 5), (4, 11))  # (batch, sequence): neither the export's (2, 7)


class _Attention(nn.Module):
    """Two-head self-attention over (batch, seq, 16): reshapes read the batch and length at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.out = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        q, k, v = self.qkv(x).reshape(batch, seq, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, seq, 16))


def _dims(value: onnx.ValueInfoProto) -> list[object]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _onnx_file(tmp_path, model):
    path = tmp_path / "user.onnx"
    torch.onnx.export(
        model, (torch.randn(2, 7, 16),), path, dynamo=False, opset_version=17, input_names=["tokens"],
        output_names=["hidden"], dynamic_axes={"tokens": {0: "n", 1: "len"}, "hidden": {0: "n", 1: "len"}},
    )  # fmt: skip
    return path, {"tokens": ["n", "len", 16], "hidden": ["n", "len", 16]}


def _pt2_file(tmp_path, model):
    path = tmp_path / "user.pt2"
    dims = {"x": {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=64)}}
    torch.export.save(torch.export.export(model, (torch.randn(2, 7, 16),), dynamic_shapes=dims), str(path))
    return path, None  # symbol names are torch's (s0, s1...): only their positions are checked


@pytest.mark.parametrize("make_file", [_onnx_file, _pt2_file], ids=["onnx", "pt2"])
def test_exported_files_run_at_other_batch_sizes_and_lengths(tmp_path, make_file):
    """Given a file whose batch and sequence dimensions are dynamic, when it is quantized and exported,
    then both exported files declare those dimensions open (under the file's own names where it has
    them) and compute the module's output at two other batch sizes and two other lengths."""
    torch.manual_seed(0)
    model = _Attention().eval()
    path, names = make_file(tmp_path, model)
    loaded = load_model(path)
    (in_name,), (out_name,) = loaded.input_names, loaded.output_names
    assert set(loaded.dynamic_dims[in_name]) == {0, 1} == set(loaded.dynamic_dims[out_name])
    sim = QuantSim(loaded)
    gen = torch.Generator().manual_seed(1)
    sim.compute_encodings([torch.randn(4, 7, 16, generator=gen) for _ in range(2)])
    result = export_sim(sim, tmp_path / "out")
    for exported in (result.onnx, result.qdq_onnx):
        graph = onnx.load(exported).graph
        declared = {v.name: _dims(v) for v in [*graph.input, *graph.output]}
        assert list(declared) == [in_name, out_name]
        for dims in declared.values():
            assert isinstance(dims[0], str) and isinstance(dims[1], str) and dims[2] == 16, declared
        if names is not None:
            assert declared == {in_name: names["tokens"], out_name: names["hidden"]}
    fp32 = ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"])
    qdq = ort.InferenceSession(str(result.qdq_onnx), providers=["CPUExecutionProvider"])
    for batch, seq in _SIZES:
        x = torch.randn(batch, seq, 16, generator=gen)
        with torch.no_grad():
            expected, simulated = model(x).numpy(), sim.model(x).numpy()
        (got,) = fp32.run(None, {in_name: x.numpy()})
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        (got,) = qdq.run(None, {in_name: x.numpy()})
        assert got.shape == (batch, seq, 16)
        # The QDQ model computes what the simulation computes (up to a rounding step here and there).
        assert float(np.abs(got - simulated).max()) < 0.05 * float(np.abs(simulated).max())
