"""A ``.pt2`` saved without example inputs: validated, quantized from calibration data, QDQ runs in ORT."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from core.cli import main
from core.errors import DataLoadError
from core.io import load_model
from tests.fixtures.pt2_without_inputs import save_pt2_without_example_inputs


@pytest.fixture(scope="module")
def no_inputs_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pt2_without_example_inputs(tmp_path_factory.mktemp("pt2") / "mobilenet_style.pt2")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_torch_writes_an_empty_sample_inputs_member(no_inputs_pt2: Path) -> None:
    # The file format this module is about: if a later torch writes something else, this says so.
    with zipfile.ZipFile(no_inputs_pt2) as archive:
        (member,) = (info for info in archive.infolist() if "/data/sample_inputs/" in info.filename)
    assert member.filename.endswith("/data/sample_inputs/model.pt") and member.file_size == 0
    assert torch.export.load(str(no_inputs_pt2)).example_inputs is None  # trusted: written by this test


def test_example_inputs_come_from_the_program_or_the_data(no_inputs_pt2: Path, tmp_path: Path) -> None:
    # Without data: the program's input spec, its symbolic batch at a small default.
    loaded = load_model(no_inputs_pt2)
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(1, 3, 32, 32)]
    assert loaded.dynamic_axes == ((0,),)
    # Data that contradicts a fixed dimension of the program is named before anything runs.
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(DataLoadError, match=r"dimension 2 must be 32"):
        load_model(no_inputs_pt2, calib=wrong)


def test_validate_then_quantize_with_calibration_and_run_qdq_in_ort(
    no_inputs_pt2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(no_inputs_pt2), "--json"]) == 0
    capsys.readouterr()
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "q"
    code = main(["quantize", str(no_inputs_pt2), "--calib", str(calib), "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    json.loads(capsys.readouterr().out)

    session = ort.InferenceSession(str(out / "model_qdq.onnx"), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(out / "model_qdq.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Held-out inputs at a batch size the program was never run with: the batch stayed dynamic.
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    (qdq,) = session.run(None, {session.get_inputs()[0].name: x})
    reference = torch.export.load(str(no_inputs_pt2)).module()  # trusted: written by this test
    with torch.no_grad():
        fp32 = reference(torch.from_numpy(x)).numpy()
    assert qdq.shape == fp32.shape == (3, 10)
    assert _cosine(qdq, fp32) > 0.99
