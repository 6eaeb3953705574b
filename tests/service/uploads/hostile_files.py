"""Hostile upload files, generated in bounded memory (no test holds more than a few MiB).

Each generator returns the file's bytes; the comment says what it would do to a loader that trusted it.
"""

from __future__ import annotations

import bz2
import functools
import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

MiB = 1 << 20


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _one_member_zip(name: str, method: int, crc: int, raw: bytes, size: int) -> bytes:
    """A zip archive holding one member whose compressed bytes are ``raw`` (written by hand: zipfile
    cannot store pre-compressed data)."""
    fname = name.encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(raw), size, len(fname), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        method,
        0,
        0x21,
        crc,
        len(raw),
        size,
        len(fname),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + fname + raw
    cd = central + fname
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + end


@functools.cache
def deflate_bomb_npz(gib: int = 1) -> bytes:
    """About 1 MB that inflates to ``gib`` GiB of zeros (a valid .npz: numpy would allocate it all).
    Built from one flushed deflate block of 16 MiB of zeros, repeated (each full flush resets the
    window, so repeating it is valid deflate)."""
    chunk = 16 * MiB
    zeros = bytes(chunk)
    total = gib << 30
    header = _npy_header(((total - 0) // 4 - 0,))  # placeholder to learn the header length
    header = _npy_header(((total - len(header)) // 4,))
    first = header + bytes(chunk - len(header))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = [c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)]
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(first)
    for _ in range(total // chunk - 1):
        raw.append(block)
        crc = zlib.crc32(zeros, crc)
    raw.append(b"\x03\x00")  # a final fixed-Huffman block holding only end-of-block
    return _one_member_zip("x.npy", zipfile.ZIP_DEFLATED, crc, b"".join(raw), total)


@functools.cache  # ~1 s of bzip2 per call; the same bytes serve every mode and test
def bzip2_npz(mib: int = 64) -> bytes:
    """A valid .npz whose bzip2 member inflates ``mib`` MiB of zeros from a few hundred bytes; zipfile
    inflates bzip2 without an output bound per read (the measured 4 GiB case grew the API by 8 GiB)."""
    header = _npy_header(((mib * MiB) // 4,))
    comp = bz2.BZ2Compressor(9)
    raw = comp.compress(header)
    crc = zlib.crc32(header)
    zeros = bytes(MiB)
    for _ in range(mib):
        raw += comp.compress(zeros)
        crc = zlib.crc32(zeros, crc)
    raw += comp.flush()
    return _one_member_zip("x.npy", zipfile.ZIP_BZIP2, crc, raw, len(header) + mib * MiB)


def lying_header_npz() -> bytes:
    """A .npy header declaring 10^12 float32 over 16 bytes of data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", _npy_header((1_000_000_000_000,)) + bytes(16))
    return buf.getvalue()


def safetensors_bad_header() -> bytes:
    """A header length pointing far past the end of the file."""
    return struct.pack("<Q", 1 << 40) + b"{}"


def safetensors_nan() -> bytes:
    raw = json.dumps({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    data = np.array([1.0, np.nan, 2.0, 3.0], np.float32).tobytes()
    return struct.pack("<Q", len(raw)) + raw + data


def onnx_huge_input() -> bytes:
    """137 bytes of ONNX declaring a 10^12-element input (example inputs would take 4 TB)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1_000_000, 1_000_000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1_000_000, 1_000_000])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def allocating_onnx() -> bytes:
    """x (1, 32768) + ConstantOfShape([32768, 32768]): 4 GiB of float32 built while converting (its
    declared input is small: only the constant folding allocates)."""
    shape = numpy_helper.from_array(np.array([1 << 15, 1 << 15], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 15, 1 << 15])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class _Marker:
    """Unpickling this runs ``touch <path>``: proof of execution if the marker appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def pt2_with_pickled_weight(real_pt2: Path, marker: Path) -> bytes:
    """A torch.export.save archive whose first weight is switched to ``use_pickle`` and replaced by a
    pickle that would create ``marker`` when loaded."""
    out = io.BytesIO()
    with zipfile.ZipFile(real_pt2) as zin, zipfile.ZipFile(out, "w") as zout:
        config_name = next(n for n in zin.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(zin.read(config_name))
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        weight = config_name.rsplit("/", 1)[0] + "/" + meta["path_name"]
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename == weight:
                data = pickle.dumps(_Marker(marker))
            zout.writestr(info.filename, data)
    return out.getvalue()
