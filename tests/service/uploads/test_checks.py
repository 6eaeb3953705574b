"""Structural upload checks: real files pass, pickles and malformed headers are refused (nothing unpickled)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from service.errors import UploadRejectedError
from service.uploads.checks import check_file

LIMIT = 1 << 30


def _write(tmp_path: Path, data: bytes, name: str = "f") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def real_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What torch.export.save writes for a small module (the oracle for the pt2 rule)."""
    torch = pytest.importorskip("torch")

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("shift", torch.ones(2))

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x) + self.shift

    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    torch.export.save(torch.export.export(Small(), (torch.randn(1, 3),)), str(path))
    return path


def test_torch_export_archive_passes(real_pt2: Path) -> None:
    check_file("pt2", real_pt2, LIMIT)


def _rewrite(src: Path, dst: Path, extra: dict[str, bytes], replace: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = (replace or {}).get(info.filename, zin.read(info))
            zout.writestr(info.filename, data)
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def test_pt2_with_pickled_module_refused(real_pt2: Path, tmp_path: Path) -> None:
    root = zipfile.ZipFile(real_pt2).namelist()[0].split("/")[0]
    bad = _rewrite(real_pt2, tmp_path / "a.pt2", {f"{root}/data/weights/model.pkl": pickle.dumps(Evil())})
    with pytest.raises(UploadRejectedError, match="pickled modules are refused"):
        check_file("pt2", bad, LIMIT)
    legacy = _rewrite(real_pt2, tmp_path / "b.pt2", {f"{root}/serialized_state_dict.pt": b"\x80\x04."})
    with pytest.raises(UploadRejectedError, match="unexpected member"):
        check_file("pt2", legacy, LIMIT)


def test_pt2_sample_inputs_with_foreign_globals_refused(real_pt2: Path, tmp_path: Path) -> None:
    """Given sample inputs whose pickle imports something besides tensor rebuilders, the file is refused."""
    with zipfile.ZipFile(real_pt2) as zf:
        sample = next(n for n in zf.namelist() if "/data/sample_inputs/" in n)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    bad = _rewrite(real_pt2, tmp_path / "c.pt2", {}, {sample: inner.getvalue()})
    with pytest.raises(UploadRejectedError, match="non-tensor objects"):
        check_file("pt2", bad, LIMIT)
    ok_inner = io.BytesIO()
    with zipfile.ZipFile(ok_inner, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(OrderedDict(a=1), protocol=2))
    check_file("pt2", _rewrite(real_pt2, tmp_path / "d.pt2", {}, {sample: ok_inner.getvalue()}), LIMIT)


def test_pt2_saved_without_example_inputs_passes(tmp_path: Path) -> None:
    """torch.export.save writes an empty sample-inputs member for a program without example inputs."""
    pytest.importorskip("torch")
    from tests.fixtures.pt2_without_inputs import save_pt2_without_example_inputs

    path = save_pt2_without_example_inputs(tmp_path / "no_inputs.pt2")
    check_file("pt2", path, LIMIT)
    with zipfile.ZipFile(path) as zf:
        sample = next(n for n in zf.namelist() if "/data/sample_inputs/" in n)
    # Only empty is "no inputs": any other bytes there must still be a torch.save archive.
    with pytest.raises(UploadRejectedError, match=r"not a torch\.save archive"):
        check_file("pt2", _rewrite(path, tmp_path / "junk.pt2", {}, {sample: b"\x80"}), LIMIT)


def test_pt2_needs_archive_format(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/models/model.json", "{}")
    with pytest.raises(UploadRejectedError, match="archive_format"):
        check_file("pt2", _write(tmp_path, buf.getvalue()), LIMIT)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_npz_plain_arrays_pass_object_arrays_refused(tmp_path: Path) -> None:
    check_file("npz", _write(tmp_path, _npz(x=np.zeros((4, 3), np.float32), labels=np.arange(4))), LIMIT)
    obj = io.BytesIO()
    np.save(obj, np.array([Evil()], dtype=object), allow_pickle=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", obj.getvalue())
    with pytest.raises(UploadRejectedError, match="object dtype"):
        check_file("npz", _write(tmp_path, buf.getvalue(), "obj"), LIMIT)


def test_npz_truncated_member_and_foreign_member_refused(tmp_path: Path) -> None:
    good = io.BytesIO()
    np.save(good, np.zeros(100, np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", good.getvalue()[:-40])
    with pytest.raises(UploadRejectedError, match="header says"):
        check_file("npz", _write(tmp_path, buf.getvalue(), "t"), LIMIT)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.pkl", pickle.dumps(1))
    with pytest.raises(UploadRejectedError, match=r"not a top-level \.npy"):
        check_file("npz", _write(tmp_path, buf.getvalue(), "p"), LIMIT)


def test_npz_zip_bomb_limit(tmp_path: Path) -> None:
    data = _npz(x=np.zeros(1_000_000, np.float32))  # 4 MB that compresses to a few KB
    with pytest.raises(UploadRejectedError, match="inflate to 4000128 bytes; accepted: at most 1000000"):
        check_file("npz", _write(tmp_path, data), 1_000_000)
    with pytest.raises(UploadRejectedError, match=r"'x.npy' inflates 1007x .*accepted: at most 200x"):
        check_file("npz", _write(tmp_path, data), LIMIT)


def _safetensors(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_headers(tmp_path: Path) -> None:
    good = _safetensors(
        {"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {}}, bytes(16)
    )
    check_file("safetensors", _write(tmp_path, good), LIMIT)
    bad = {
        "dtype": _safetensors({"x": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        "offsets": _safetensors({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
        "covers": _safetensors({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)),
        "header length": struct.pack("<Q", 1 << 40) + b"{}",
        "nesting": struct.pack("<Q", 100_000) + b"[" * 100_000,  # json.loads would recurse past the limit
    }
    for why, data in bad.items():
        with pytest.raises(UploadRejectedError):
            check_file("safetensors", _write(tmp_path, data, why.replace(" ", "_")), LIMIT)


def test_onnx_external_data_refused(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", 1, [1])],
        [tensor],
    )
    path = _write(tmp_path, helper.make_model(graph).SerializeToString())
    with pytest.raises(UploadRejectedError, match="external data"):
        check_file("onnx", path, LIMIT)


# Hostile files (tests/service/uploads/hostile_files.py): each refused with a message naming what is
# wrong and what is accepted, within bounded memory.


def _refused(tmp_path: Path, fmt: str, data: bytes, match: str) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UploadRejectedError, match=match):
        check_file(fmt, _write(tmp_path, data, f"h.{fmt}"), 20 << 30)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_zip_bombs_refused_from_their_headers(tmp_path: Path) -> None:
    from tests.service.uploads import hostile_files as hf

    _refused(
        tmp_path, "npz", hf.bzip2_npz(16), r"'x.npy' is compressed with bzip2; accepted: stored or deflate"
    )
    _refused(tmp_path, "npz", hf.deflate_bomb_npz(1), r"'x.npy' inflates 10\d\dx .* accepted: at most 200x")


def test_deflate_bomb_is_a_valid_npz_that_numpy_would_inflate(tmp_path: Path) -> None:
    """The oracle for the generator: zipfile reads the bomb's first bytes as a real .npy header."""
    from tests.service.uploads import hostile_files as hf

    with zipfile.ZipFile(io.BytesIO(hf.deflate_bomb_npz(1))) as zf, zf.open("x.npy") as member:
        assert np.lib.format.read_magic(member) == (1, 0)
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        assert dtype == np.float32 and shape[0] * 4 > 1_000_000_000 and member.read(1 << 20) == bytes(1 << 20)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.array([["a", "b"]])}, r"array 'x' has dtype <U1 \(unicode strings\); accepted: bool, int8"),
        ({"x": np.zeros((2, 2), np.complex64)}, r"complex numbers\); accepted"),
        (
            {"x": np.zeros((0, 4), np.float32)},
            r"array 'x' has shape \(0, 4\) with no elements \(zero samples\)",
        ),
        ({"x": np.float32(1.0)}, r"array 'x' is a scalar"),
        ({"x": np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)}, r"holds 2 NaN or infinite values"),
        ({"x": np.array([1.0, -np.inf], np.float16), "labels": np.arange(2)}, r"holds 1 NaN or infinite"),
    ],
)
def test_npz_contents_refused(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    _refused(tmp_path, "npz", hf_npz(**arrays), match)


def hf_npz(**arrays: np.ndarray) -> bytes:
    from tests.service.uploads import hostile_files as hf

    return hf.npz(**arrays)


def test_lying_headers_refused(tmp_path: Path) -> None:
    from tests.service.uploads import hostile_files as hf

    _refused(tmp_path, "npz", hf.lying_header_npz(), r"array 'x': header says 4000000000000 bytes")
    _refused(
        tmp_path, "safetensors", hf.safetensors_bad_header(), "header length 1099511627776 exceeds the file"
    )
    _refused(tmp_path, "safetensors", hf.safetensors_nan(), r"tensor 'x' holds 1 NaN or infinite values")


def test_safetensors_bfloat16_infinity_and_empty_tensor_refused(tmp_path: Path) -> None:
    inf_bf16 = struct.pack("<4H", 0x3F80, 0x7F80, 0, 0x4000)  # 1.0, +inf, 0, 2.0
    data = _safetensors({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, inf_bf16)
    _refused(tmp_path, "safetensors", data, r"tensor 'x' holds 1 NaN or infinite")
    ok = struct.pack("<4H", 0x3F80, 0x3F80, 0, 0x4000)
    check_file(
        "safetensors",
        _write(tmp_path, _safetensors({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, ok)),
        LIMIT,
    )
    empty = _safetensors({"x": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}}, b"")
    _refused(tmp_path, "safetensors", empty, r"tensor 'x' has shape \(0, 3\) with no elements")


def test_onnx_declared_input_over_budget_refused(tmp_path: Path) -> None:
    from tests.service.uploads import hostile_files as hf

    data = hf.onnx_huge_input()
    assert len(data) < 200
    _refused(
        tmp_path, "onnx", data, r"model input 'x' declares shape \[1000000, 1000000\] .* accepted: at most"
    )


def test_pt2_with_pickled_weight_refused_and_nothing_runs(real_pt2: Path, tmp_path: Path) -> None:
    from tests.service.uploads import hostile_files as hf

    marker = tmp_path / "ran"
    data = hf.pt2_with_pickled_weight(real_pt2, marker)
    _refused(tmp_path, "pt2", data, r"is stored as a pickle; accepted: raw tensors")
    assert not marker.exists()
