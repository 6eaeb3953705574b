"""Data files: .npz/.safetensors matched to model inputs; every bad input gets one clear error."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from core.errors import DataLoadError
from core.io import CalibrationData, LoadedModel, load_data
from core.io.tensor_files import load_tensors

IMAGES = np.random.default_rng(0).standard_normal((10, 1, 8, 8)).astype(np.float32)
LABELS = np.arange(10, dtype=np.int64) % 3


def _model() -> LoadedModel:
    return LoadedModel.from_module(torch.nn.Flatten(), torch.zeros(1, 1, 8, 8), ["input"])


def test_npz_round_trip_batches_and_labels(tmp_path):
    np.savez(tmp_path / "d.npz", input=IMAGES, labels=LABELS)
    data = load_data(tmp_path / "d.npz", ["input"])
    assert data.num_samples == 10
    batches = list(data.batches(4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).numpy(), IMAGES)
    labels = torch.cat([y for _, y in data.labeled_batches(3)]).numpy()
    np.testing.assert_array_equal(labels, LABELS)


def test_safetensors_and_single_array_fallback(tmp_path):
    save_file({"pixels": IMAGES}, str(tmp_path / "d.safetensors"))
    data = load_data(tmp_path / "d.safetensors", ["input"])
    assert list(data.inputs) == ["input"] and data.labels is None
    np.testing.assert_array_equal(data.inputs["input"], IMAGES)


def test_for_model_casts_and_checks_shapes(tmp_path):
    np.savez(tmp_path / "d.npz", input=IMAGES.astype(np.float64))
    data = load_data(tmp_path / "d.npz", ["input"]).for_model(_model())
    assert data.inputs["input"].dtype == np.float32
    np.savez(tmp_path / "bad.npz", input=IMAGES.reshape(10, 1, 4, 16))
    with pytest.raises(DataLoadError, match=r"dimension 2 must be 8"):
        load_data(tmp_path / "bad.npz", ["input"]).for_model(_model())
    np.savez(tmp_path / "rank.npz", input=IMAGES.reshape(10, 64))
    with pytest.raises(DataLoadError, match="expects"):
        load_data(tmp_path / "rank.npz", ["input"]).for_model(_model())


def _object_npz(path):
    np.savez(path, input=np.array([{"a": 1}, None], dtype=object))


def _pickle_npz(path):
    # A .npz member that is a raw pickle rather than a .npy array.
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input.npy", b"\x80\x04\x95" + b"\0" * 20)


def _huge_npz(path):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("input.npy", buffer.getvalue() + b"\0" * 16)


BAD_FILES = [
    ("missing", "d.npz", None, "does not exist"),
    ("extension", "d.pkl", lambda p: p.write_bytes(b"x"), "unsupported extension '.pkl'"),
    ("corrupt_zip", "d.npz", lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a valid .npz"),
    ("truncated", "d.npz", lambda p: p.write_bytes(_npz_bytes()[:200]), "not a valid .npz"),
    ("object_dtype", "d.npz", _object_npz, "object/string/structured"),
    ("pickle_member", "d.npz", _pickle_npz, "corrupt .npy header"),
    ("huge_shape", "d.npz", _huge_npz, "declares shape"),
    (
        "nan",
        "d.npz",
        lambda p: np.savez(p, input=np.full((2, 1, 8, 8), np.nan, np.float32)),
        "NaN or infinite",
    ),
    (
        "sample_counts",
        "d.npz",
        lambda p: np.savez(p, input=IMAGES, labels=LABELS[:5]),
        "different sample counts",
    ),
    (
        "wrong_names",
        "d.npz",
        lambda p: np.savez(p, a=IMAGES, b=IMAGES),
        r"no array for model inputs \['input'\]",
    ),
    ("extra_names", "d.npz", lambda p: np.savez(p, input=IMAGES, other=IMAGES), "match no model input"),
    ("scalar", "d.npz", lambda p: np.savez(p, input=np.float32(1.0)), "leading samples dimension"),
    ("bad_safetensors", "d.safetensors", lambda p: p.write_bytes(b"\xff" * 8 + b"{}"), "safetensors"),
]


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, input=IMAGES)
    return buffer.getvalue()


@pytest.mark.parametrize(("case", "name", "write", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_data_files_are_refused_with_a_clear_message(tmp_path, case, name, write, message):
    path = tmp_path / name
    if write is not None:
        write(path)
    with pytest.raises(DataLoadError, match=message) as info:
        load_data(path, ["input"])
    assert name in str(info.value)


def test_load_tensors_reads_all_arrays_in_order(tmp_path):
    np.savez(tmp_path / "t.npz", b=LABELS, a=IMAGES)
    assert list(load_tensors(tmp_path / "t.npz")) == ["b", "a"]


def test_batches_refuses_bad_batch_size():
    with pytest.raises(DataLoadError, match="batch_size"):
        next(CalibrationData({"input": IMAGES}).batches(0))


def test_errors_name_the_files_key_not_only_the_model_input(tmp_path):
    """A single array keyed 'pixels' fed to the one-input model (input 'input'): a shape error names
    'pixels', the key the user wrote, and the model input it was matched to."""
    np.savez(tmp_path / "k.npz", pixels=np.zeros((4, 1, 8, 9), np.float32))
    with pytest.raises(
        DataLoadError, match=r"array 'pixels' \(model input 'input'\) has shape \(4, 1, 8, 9\)"
    ):
        load_data(tmp_path / "k.npz", ["input"]).for_model(_model())
    np.savez(tmp_path / "n.npz", pixels=np.array([[[[np.nan]]]], np.float32))
    with pytest.raises(DataLoadError, match=r"array 'pixels' contains NaN"):
        load_data(tmp_path / "n.npz", ["input"])
