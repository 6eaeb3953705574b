"""Cheap structural checks of uploaded files, without torch and without unpickling anything.

- ``onnx``: the protobuf parses, ``onnx.checker`` passes, no external-data references.
- ``npz``: a well-formed zip whose members are all ``.npy`` with a non-object dtype header; headers are
  read from the members without extracting them; declared sizes within the limit.
- ``safetensors``: the JSON header is sane (known dtypes, offsets inside the file, sizes match shapes).
- ``pt2`` (``torch.export.save`` archive): a well-formed zip with ``archive_format`` = ``pt2`` whose
  members all match the layout torch.export writes. The rule on pickles: ``torch.export.save`` always
  writes ``data/sample_inputs/*.pt``, a nested ``torch.save`` archive whose ``data.pkl`` is a pickle. Such
  a member is accepted only when a static scan of its opcodes (``pickletools.genops``, never
  ``pickle.loads``) finds no imports besides torch's tensor-rebuild functions, storage classes and
  ``collections.OrderedDict``. Any other pickle (``.pkl`` members, legacy ``serialized_*.pt`` archives,
  pickled constants) is refused. The worker loads sample inputs only with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from service.errors import UploadRejectedError

MODEL_FORMATS = ("onnx", "pt2")
DATASET_FORMATS = ("npz", "safetensors")

_SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_PT2_MEMBER = re.compile(
    r"^[^/]+/(archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id"
    r"|models/[^/]+\.json|data/weights/[^/]+|data/constants/[^/]+|data/sample_inputs/[^/]+\.pt|extra/[^/]+)$"
)
_SAFE_GLOBALS = re.compile(
    r"^(torch\._utils _rebuild_tensor_v2|torch\._utils _rebuild_parameter|torch [A-Za-z0-9]+Storage"
    r"|collections OrderedDict|torch device|torch Size)$"
)


def _reject(fmt: str, why: str) -> UploadRejectedError:
    return UploadRejectedError(f"not a valid .{fmt} file: {why}")


def check_onnx(path: Path, max_bytes: int) -> None:
    """Parse the ONNX protobuf and run the checker; refuse external data (nothing outside the file)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # the protobuf parser raises several unrelated types
        raise _reject("onnx", f"the protobuf does not parse ({type(exc).__name__})") from None
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise _reject("onnx", f"initializer {tensor.name!r} uses external data; embed all weights")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise _reject("onnx", f"onnx.checker: {str(exc).splitlines()[0][:300]}") from None


def _open_zip(path: Path, fmt: str, max_bytes: int) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _reject(fmt, f"not a zip archive ({exc})") from None
    total = sum(info.file_size for info in zf.infolist())
    if total > max_bytes:
        zf.close()
        raise _reject(fmt, f"members expand to {total} bytes, over the {max_bytes}-byte limit")
    return zf


def _npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    reader: Callable[..., tuple[tuple[int, ...], bool, np.dtype]] = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version, np.lib.format.read_array_header_2_0)
    shape, _fortran, dtype = reader(stream, max_header_size=10_000)
    return shape, dtype


def check_npz(path: Path, max_bytes: int) -> None:
    """Every member is a ``.npy`` whose header declares a plain (non-object) dtype and a matching size."""
    with _open_zip(path, "npz", max_bytes) as zf:
        infos = zf.infolist()
        if not infos:
            raise _reject("npz", "the archive has no arrays")
        for info in infos:
            if not info.filename.endswith(".npy") or "/" in info.filename:
                raise _reject("npz", f"member {info.filename!r} is not a top-level .npy array")
            try:
                with zf.open(info) as member:
                    shape, dtype = _npy_header(member)
                    header_len = member.tell()
            except (ValueError, OSError, zipfile.BadZipFile, SyntaxError) as exc:
                raise _reject("npz", f"member {info.filename!r} has no valid .npy header ({exc})") from None
            if dtype.hasobject:
                raise _reject(
                    "npz", f"array {info.filename[:-4]!r} has an object dtype (pickles are refused)"
                )
            expected = math.prod(shape) * dtype.itemsize
            if info.file_size - header_len != expected:
                raise _reject("npz", f"array {info.filename[:-4]!r}: header says {expected} bytes of data")


def check_safetensors(path: Path, max_bytes: int) -> None:
    """The header parses, names known dtypes, and its offsets tile the data section exactly."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise _reject("safetensors", "shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > min(100 * 1024 * 1024, size - 8):
            raise _reject("safetensors", f"header length {n} exceeds the file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _reject("safetensors", "the header is not JSON") from None
        except RecursionError:  # valid JSON nested deeper than the parser goes: no real header is
            raise _reject("safetensors", "the header nests too deeply") from None
    if not isinstance(header, dict):
        raise _reject("safetensors", "the header is not a JSON object")
    spans: list[tuple[int, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise _reject(
                "safetensors", f"tensor {name!r}: dtype must be one of {sorted(_SAFETENSORS_DTYPES)}"
            )
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _reject("safetensors", f"tensor {name!r}: shape must be a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _reject("safetensors", f"tensor {name!r}: data_offsets must be [begin, end]")
        if offsets[1] - offsets[0] != math.prod(shape) * _SAFETENSORS_DTYPES[entry["dtype"]]:
            raise _reject("safetensors", f"tensor {name!r}: data_offsets do not match shape and dtype")
        spans.append((offsets[0], offsets[1]))
    if not spans:
        raise _reject("safetensors", "no tensors")
    spans.sort()
    cursor = 0
    for begin, end in spans:
        if begin != cursor:
            raise _reject("safetensors", "tensor data overlaps or leaves gaps")
        cursor = end
    if cursor != size - 8 - n:
        raise _reject("safetensors", f"tensors cover {cursor} bytes but the data section has {size - 8 - n}")


def _pickle_globals(data: bytes) -> list[str]:
    """The 'module name' pairs a pickle would import, found by scanning opcodes (nothing is executed)."""
    found: list[str] = []
    strings: list[str] = []
    for op, arg, _pos in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(str(arg))
        elif op.name == "GLOBAL":
            found.append(str(arg))
        elif op.name == "STACK_GLOBAL":
            found.append(" ".join(strings[-2:]) if len(strings) >= 2 else "?")
        elif op.name == "INST":
            found.append(str(arg))
    return found


def _check_sample_inputs(data: bytes, name: str) -> None:
    import io

    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise _reject("pt2", f"member {name!r} is not a torch.save archive") from None
    with inner:
        for info in inner.infolist():
            if info.filename.endswith(".pkl"):
                if info.filename.rsplit("/", 1)[-1] != "data.pkl":
                    raise _reject("pt2", f"member {name!r} holds an extra pickle {info.filename!r}")
                try:
                    imports = _pickle_globals(inner.read(info))
                except Exception:
                    raise _reject("pt2", f"member {name!r} holds a malformed pickle") from None
                bad = [g for g in imports if not _SAFE_GLOBALS.match(g)]
                if bad:
                    raise _reject("pt2", f"member {name!r} pickles non-tensor objects ({', '.join(bad[:3])})")


def check_pt2(path: Path, max_bytes: int) -> None:
    """A torch.export archive in the PT2 layout with no pickles beyond tensor-only sample inputs."""
    with _open_zip(path, "pt2", max_bytes) as zf:
        names = zf.namelist()
        formats = [n for n in names if n.count("/") == 1 and n.endswith("/archive_format")]
        if not formats or zf.read(formats[0]).strip() != b"pt2":
            raise _reject("pt2", "no archive_format 'pt2' member; save the program with torch.export.save")
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not _PT2_MEMBER.match(info.filename) or info.filename.endswith(".pkl"):
                raise _reject("pt2", f"unexpected member {info.filename!r} (pickled modules are refused)")
            if "/data/sample_inputs/" in info.filename:
                if info.file_size > 256 * 1024 * 1024:
                    raise _reject("pt2", "sample inputs over 256 MiB")
                _check_sample_inputs(zf.read(info), info.filename)


CHECKS: dict[str, Callable[[Path, int], None]] = {
    "onnx": check_onnx,
    "pt2": check_pt2,
    "npz": check_npz,
    "safetensors": check_safetensors,
}


def check_file(fmt: str, path: Path, max_bytes: int) -> None:
    """Run the check for ``fmt`` on ``path``; UploadRejectedError says what is wrong."""
    try:
        check = CHECKS[fmt]
    except KeyError:
        raise UploadRejectedError(f"unknown format {fmt!r}; accepted: {', '.join(CHECKS)}") from None
    check(path, max_bytes)
