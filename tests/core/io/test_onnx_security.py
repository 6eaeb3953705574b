"""ONNX files: external data only from the model's own folder; sizes checked before allocation."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from core.errors import ModelLoadError
from core.io import load_model
from tests.core.io.onnx_builders import initializer, save_model, tensor_input

X2 = [tensor_input("x", ["N", 4])]


def _gemm_model(tmp_path, name="m.onnx"):
    weight = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)]
    return save_model(tmp_path / name, nodes, X2, ["y"], [initializer("w", weight)]), weight


def _point_weight_at(path, location, length=32, offset=0):
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    onnx.save(model, str(path))


def test_external_data_inside_the_folder_loads(tmp_path):
    path, weight = _gemm_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(weight.tobytes())
    _point_weight_at(path, "weights.bin")
    loaded = load_model(path)
    x = torch.ones(3, 4)
    torch.testing.assert_close(loaded.module(x), x @ torch.from_numpy(weight).T)


@pytest.mark.parametrize(
    ("location", "message"),
    [("../../etc/passwd", "contains '..'"), ("/etc/passwd", "absolute"), ("missing.bin", "does not exist")],
)
def test_external_data_outside_or_missing_is_refused(tmp_path, location, message):
    path, _ = _gemm_model(tmp_path)
    _point_weight_at(path, location)
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)


def test_symlink_escaping_the_folder_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    os.symlink(secret, model_dir / "weights.bin")
    path, _ = _gemm_model(model_dir)
    _point_weight_at(path, "weights.bin")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_external_range_beyond_the_file_is_refused(tmp_path):
    path, weight = _gemm_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(weight.tobytes()[:16])
    _point_weight_at(path, "weights.bin")
    with pytest.raises(ModelLoadError, match="exceeds"):
        load_model(path)


def test_huge_declared_shape_is_refused_before_allocation(tmp_path):
    path, _ = _gemm_model(tmp_path)
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    del tensor.dims[:]
    tensor.dims.extend([1 << 20, 1 << 20])  # 4 TiB declared, 32 bytes stored
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="declares"):
        load_model(path)


def test_truncated_and_garbage_files_are_refused(tmp_path):
    path, _ = _gemm_model(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) - 20])
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 100)
    for name in ("cut.onnx", "junk.onnx"):
        with pytest.raises(ModelLoadError, match=name):
            load_model(tmp_path / name)


def test_huge_declared_input_is_refused_before_building_probes(tmp_path):
    """Given a 10^12-element input declaration (a 4 TB float tensor) in a tiny model, loading fails with
    a ModelLoadError naming the input and the limit, without allocating (this test's process would die)."""
    import resource

    path = save_model(
        tmp_path / "big.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor_input("x", [1_000_000, 1_000_000])],
        ["y"],
        [],
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelLoadError, match=r"model input 'x' declares shape \[1000000, 1000000\]"):
        load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024  # KiB: < 256 MiB
