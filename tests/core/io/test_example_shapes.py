"""Example inputs and shape probes take their shape from the calibration data, never from a declared
size alone: a model declaring a 10^12-element input quantizes when its data is small and fits, and
fails with a clear message (no traceback) when the data contradicts a fixed dimension."""

from __future__ import annotations

import resource

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from core.cli import main
from core.errors import DataLoadError
from core.io import load_data, load_model
from tests.core.io.onnx_builders import initializer, save_model, tensor_input

KiB_PER_GiB = 1 << 20


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_a_huge_declared_batch_quantizes_with_the_data_shape(tmp_path, capsys):
    """Given x: [62_500_000_000, 16] (10^12 elements, 4 TB as float32) into a MatMul and calibration
    data of 8 samples under another key, `lowbit quantize` succeeds in bounded memory, and the QDQ
    model in ONNX Runtime computes x @ w for a batch of 8 within 8-bit error."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 4)).astype(np.float32)
    model = save_model(
        tmp_path / "big.onnx",
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [tensor_input("x", [62_500_000_000, 16])],
        ["y"],
        [initializer("w", weight)],
    )
    x = rng.standard_normal((8, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", images=x)
    before = _peak_kib()
    code = main(
        ["quantize", str(model), "--calib", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "q")]
    )
    assert code == 0, capsys.readouterr().err
    assert _peak_kib() - before < KiB_PER_GiB  # imports included; the declaration alone is 4 TB
    session = ort.InferenceSession(str(tmp_path / "q" / "model_qdq.onnx"))
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    expected = x @ weight
    assert y.shape == (8, 4) and np.abs(y - expected).max() < 0.02 * np.abs(expected).max()


def test_data_contradicting_a_huge_fixed_dimension_fails_cleanly(tmp_path, capsys):
    """Given x: [1_000_000, 1_000_000] and data of shape (8, 16), `lowbit quantize` exits 3 naming the
    data file, its array, the dimension and the declaration, with no traceback and nothing allocated."""
    model = save_model(
        tmp_path / "relu.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor_input("x", [1_000_000, 1_000_000])],
        ["y"],
    )
    np.savez(tmp_path / "calib.npz", images=np.ones((8, 16), np.float32))
    before = _peak_kib()
    code = main(
        ["quantize", str(model), "--calib", str(tmp_path / "calib.npz"), "--out", str(tmp_path / "q")]
    )
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err, err
    assert "calib.npz': array 'images' has shape (8, 16); dimension 1 must be 1000000" in err, err
    assert "model input 'x' declares [1000000, 1000000]" in err, err
    assert _peak_kib() - before < 256 * 1024
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_an_input_without_a_declared_shape_takes_the_data_shape(tmp_path):
    """No shape: the data's, its samples axis dynamic. A fixed 1 the data does not fill (what some
    exporters write for a dynamic axis) is probed as dynamic, as CalibrationData.for_model accepts it."""
    ones = save_model(
        tmp_path / "ones.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor_input("x", [1, 1, 7])],
        ["y"],
    )
    model = save_model(
        tmp_path / "m.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        ["y"],
    )
    np.savez(tmp_path / "calib.npz", x=np.ones((5, 3, 7), np.float32))
    loaded = load_model(model, calib=tmp_path / "calib.npz")
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(2, 3, 7)]  # open axes at the probe size 2
    assert load_data(tmp_path / "calib.npz", loaded.input_names).for_model(loaded).num_samples == 5
    assert [tuple(t.shape) for t in load_model(model).example_inputs] == [()]  # no data: a scalar
    loaded = load_model(ones, calib=tmp_path / "calib.npz")
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(1, 3, 7)]  # the data's length there
    assert loaded.dynamic_axes == ((1,),)  # the unfilled 1 is open in exports too
    assert load_data(tmp_path / "calib.npz", loaded.input_names).for_model(loaded).num_samples == 5


def test_pt2_fixed_dimensions_are_checked_against_the_data_before_allocating(tmp_path):
    """A program without usable saved samples gets zeros of its fixed shape when the data agrees, and a
    DataLoadError naming both shapes when it does not."""
    program = torch.export.export(torch.nn.Linear(16, 4).eval(), (torch.zeros(4, 16),))
    program.example_inputs = ((torch.zeros(1, dtype=torch.int8),), {})  # saved, but fits no input
    path = tmp_path / "m.pt2"
    torch.export.save(program, str(path))
    np.savez(tmp_path / "ok.npz", x=np.ones((8, 16), np.float32))
    np.savez(tmp_path / "bad.npz", x=np.ones((8, 12), np.float32))
    assert [tuple(t.shape) for t in load_model(path, calib=tmp_path / "ok.npz").example_inputs] == [(4, 16)]
    with pytest.raises(
        DataLoadError,
        match=r"array 'x' has shape \(8, 12\); dimension 1 must be 16 \(program input .* \[4, 16\]\)",
    ):
        load_model(path, calib=tmp_path / "bad.npz")
