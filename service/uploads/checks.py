"""The structural check of every upload at complete, without torch and without unpickling anything,
within the budgets of service/uploads/budgets.py (zip members: service/uploads/zip_members.py; array
contents: service/uploads/array_checks.py). The worker runs the same check again before loading.

- ``onnx``: the protobuf parses, ``onnx.checker`` passes, no external-data references; declared input
  shapes and tensor sizes within the budgets (the worker builds example inputs from the former).
- ``npz``: a well-formed zip of stored/deflated members that are all ``.npy`` with an accepted numeric
  dtype, samples, a data size matching the header and finite floats (streamed, never inflated whole).
- ``safetensors``: the JSON header is sane (known dtypes, offsets inside the file, sizes match shapes);
  tensors have samples and finite floats (streamed).
- ``pt2`` (``torch.export.save`` archive): a well-formed zip with ``archive_format`` = ``pt2`` whose
  members all match the layout torch.export writes. The rule on pickles: ``torch.export.save`` always
  writes ``data/sample_inputs/*.pt``: empty for a program without example inputs, else a nested
  ``torch.save`` archive whose ``data.pkl`` is a pickle. Such
  a member is accepted only when a static scan of its opcodes (``pickletools.genops``, never
  ``pickle.loads``) finds no imports besides torch's tensor-rebuild functions, storage classes and
  ``collections.OrderedDict``. Any other pickle (``.pkl`` members, legacy ``serialized_*.pt`` archives,
  pickled constants, ``use_pickle`` weights) is refused. The worker loads sample inputs only with
  ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from service.errors import UploadRejectedError
from service.uploads.array_checks import ACCEPTED_DTYPES, FiniteCheck, dtype_problem, samples_problem
from service.uploads.budgets import UploadBudgets
from service.uploads.zip_members import check_member_header, member_chunks, open_zip, read_member, reject

_SMALL_MEMBER = 64 * 1024 * 1024  # a pickle of tensor metadata, a weights config: read whole
_SAMPLE_INPUTS = 64 * 1024 * 1024  # the nested torch.save archive of example inputs: read whole

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
    return reject(fmt, why)


def _budgets(budgets: UploadBudgets | int) -> UploadBudgets:
    return UploadBudgets(max_file_bytes=budgets) if isinstance(budgets, int) else budgets


def _onnx_tensors(graph: object) -> Iterator[object]:
    yield from graph.initializer  # type: ignore[attr-defined]
    for node in graph.node:  # type: ignore[attr-defined]
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def _check_onnx_sizes(model: object, budgets: UploadBudgets, file_size: int) -> None:
    """Declared input shapes and tensor sizes against the budgets (the worker builds example inputs
    from the former and allocates the latter)."""
    import onnx

    graph = model.graph  # type: ignore[attr-defined]
    stored = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in stored:
            continue
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
        numel = math.prod(d for d in dims if d > 0)
        if numel > budgets.max_input_elements:
            raise _reject(
                "onnx",
                f"model input {value.name!r} declares shape {dims} ({numel} elements); accepted: at most "
                f"{budgets.max_input_elements} elements per input (make the batch dimension dynamic)",
            )
    for tensor in _onnx_tensors(graph):
        numel = math.prod(tensor.dims)  # type: ignore[attr-defined]
        if any(d < 0 for d in tensor.dims):  # type: ignore[attr-defined]
            raise _reject("onnx", f"tensor {tensor.name!r} has negative dimensions")  # type: ignore[attr-defined]
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError):
            itemsize = 1
        nbytes = numel * itemsize
        name = tensor.name  # type: ignore[attr-defined]
        if nbytes > budgets.max_tensor_bytes:
            raise _reject(
                "onnx",
                f"tensor {name!r} declares {nbytes} bytes; accepted: at most {budgets.max_tensor_bytes}",
            )
        if tensor.HasField("raw_data") and len(tensor.raw_data) != nbytes:  # type: ignore[attr-defined]
            raise _reject("onnx", f"tensor {name!r} declares {list(tensor.dims)} but holds other data")  # type: ignore[attr-defined]
        if not tensor.HasField("raw_data") and numel > file_size:  # type: ignore[attr-defined]
            raise _reject("onnx", f"tensor {name!r} declares {numel} elements, more than the file holds")


def check_onnx(path: Path, budgets: UploadBudgets | int) -> None:
    """Parse the ONNX protobuf and run the checker; refuse external data (nothing outside the file) and
    declared sizes over the budgets."""
    import onnx

    budgets = _budgets(budgets)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # the protobuf parser raises several unrelated types
        raise _reject("onnx", f"the protobuf does not parse ({type(exc).__name__})") from None
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise _reject("onnx", f"initializer {tensor.name!r} uses external data; embed all weights")
    _check_onnx_sizes(model, budgets, path.stat().st_size)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise _reject("onnx", f"onnx.checker: {str(exc).splitlines()[0][:300]}") from None


def _npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    reader: Callable[..., tuple[tuple[int, ...], bool, np.dtype]] = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version, np.lib.format.read_array_header_2_0)
    shape, _fortran, dtype = reader(stream, max_header_size=10_000)
    return shape, dtype


def check_npz(path: Path, budgets: UploadBudgets | int) -> None:
    """Every member is a top-level ``.npy`` with an accepted dtype, samples, a data size matching its
    header, and only finite floats (checked while the member streams)."""
    budgets = _budgets(budgets)
    with open_zip(path, "npz", budgets) as zf:
        infos = zf.infolist()
        if not infos:
            raise _reject("npz", "the archive has no arrays")
        for info in infos:
            if not info.filename.endswith(".npy") or "/" in info.filename:
                raise _reject("npz", f"member {info.filename!r} is not a top-level .npy array")
            key = info.filename[:-4]
            try:
                with zf.open(info) as member:
                    shape, dtype = _npy_header(member)
                    header_len = member.tell()
            except (ValueError, OSError, zipfile.BadZipFile, SyntaxError, EOFError) as exc:
                raise _reject("npz", f"member {info.filename!r} has no valid .npy header ({exc})") from None
            if dtype.hasobject:
                raise _reject("npz", f"array {key!r} has an object dtype (pickles are refused)")
            why = dtype_problem(dtype)
            if why is not None:
                raise _reject("npz", f"array {key!r} has {why}; accepted: {ACCEPTED_DTYPES}")
            why = samples_problem(shape)
            if why is not None:
                raise _reject("npz", f"array {key!r} {why}")
            expected = math.prod(shape) * dtype.itemsize
            if info.file_size - header_len != expected:
                raise _reject("npz", f"array {key!r}: header says {expected} bytes of data")
            finite = FiniteCheck(dtype)
            for chunk in member_chunks(zf, info, "npz", budgets, skip=header_len):
                finite.feed(chunk)
            if finite.bad:
                raise _reject(
                    "npz",
                    f"array {key!r} holds {finite.bad} NaN or infinite values; accepted: finite numbers",
                )


def check_safetensors(path: Path, budgets: UploadBudgets | int) -> None:
    """The header parses, names known dtypes, and its offsets tile the data section exactly; every
    tensor has samples and only finite floats (checked while the data streams)."""
    budgets = _budgets(budgets)
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
    dtypes: dict[tuple[int, int], tuple[str, str]] = {}
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
        why = samples_problem(shape)
        if why is not None:
            raise _reject("safetensors", f"tensor {name!r} {why}")
        spans.append((offsets[0], offsets[1]))
        dtypes[(offsets[0], offsets[1])] = (name, entry["dtype"])
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
    _check_safetensors_values(path, 8 + n, spans, dtypes, budgets.chunk_bytes)


def _check_safetensors_values(
    path: Path, start: int, spans: list[tuple[int, int]], dtypes: dict[tuple[int, int], tuple[str, str]],
    chunk: int,
) -> None:  # fmt: skip
    with path.open("rb") as fh:
        fh.seek(start)
        for span in spans:
            name, dtype = dtypes[span]
            finite, left = FiniteCheck(dtype), span[1] - span[0]
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    raise _reject("safetensors", f"tensor {name!r} is truncated")
                finite.feed(data)
                left -= len(data)
            if finite.bad:
                raise _reject(
                    "safetensors",
                    f"tensor {name!r} holds {finite.bad} NaN or infinite values; accepted: finite numbers",
                )


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


def _check_sample_inputs(data: bytes, name: str, budgets: UploadBudgets) -> None:
    import io

    # An empty member is what torch.export.save writes for a program without example inputs
    # (torch.export.load reads it back as None): nothing to unpickle, nothing to check.
    if not data:
        return
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise _reject("pt2", f"member {name!r} is not a torch.save archive") from None
    with inner:
        for info in inner.infolist():
            check_member_header(info, "pt2", budgets)
            if info.filename.endswith(".pkl"):
                if info.filename.rsplit("/", 1)[-1] != "data.pkl":
                    raise _reject("pt2", f"member {name!r} holds an extra pickle {info.filename!r}")
                try:
                    imports = _pickle_globals(read_member(inner, info, "pt2", budgets, _SMALL_MEMBER))
                except UploadRejectedError:
                    raise
                except Exception:
                    raise _reject("pt2", f"member {name!r} holds a malformed pickle") from None
                bad = [g for g in imports if not _SAFE_GLOBALS.match(g)]
                if bad:
                    raise _reject("pt2", f"member {name!r} pickles non-tensor objects ({', '.join(bad[:3])})")


def _check_payload_config(data: bytes, name: str) -> None:
    """Weights and constants are raw tensors: ``use_pickle`` entries would be unpickled by torch."""
    try:
        config = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _reject("pt2", f"member {name!r} is not valid JSON") from None
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _reject("pt2", f"member {name!r} is not a payload config")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _reject(
                "pt2",
                f"{fqn!r} in {name.split('/', 1)[-1]!r} is stored as a pickle; accepted: raw tensors as "
                "torch.export.save writes them (pickled weights, constants and objects are refused)",
            )
        file = meta.get("path_name")
        if "constants" in name and not (isinstance(file, str) and file.startswith("tensor_")):
            raise _reject("pt2", f"constant {fqn!r} is a custom or opaque object; accepted: tensors")


def check_pt2(path: Path, budgets: UploadBudgets | int) -> None:
    """A torch.export archive in the PT2 layout with no pickles beyond tensor-only sample inputs and
    no pickled weights or constants; every member streamed within the budgets."""
    budgets = _budgets(budgets)
    with open_zip(path, "pt2", budgets) as zf:
        names = zf.namelist()
        formats = [n for n in names if n.count("/") == 1 and n.endswith("/archive_format")]
        if not formats or read_member(zf, zf.getinfo(formats[0]), "pt2", budgets, 64).strip() != b"pt2":
            raise _reject("pt2", "no archive_format 'pt2' member; save the program with torch.export.save")
        for info in zf.infolist():
            if info.is_dir():
                continue
            if not _PT2_MEMBER.match(info.filename) or info.filename.endswith(".pkl"):
                raise _reject("pt2", f"unexpected member {info.filename!r} (pickled modules are refused)")
            if "/data/sample_inputs/" in info.filename:
                _check_sample_inputs(
                    read_member(zf, info, "pt2", budgets, _SAMPLE_INPUTS), info.filename, budgets
                )
            elif re.search(r"/data/(weights|constants)/[^/]+_config\.json$", info.filename):
                _check_payload_config(read_member(zf, info, "pt2", budgets, _SMALL_MEMBER), info.filename)
            else:
                for _chunk in member_chunks(zf, info, "pt2", budgets):
                    pass  # sizes and CRC verified as the bytes stream


CHECKS: dict[str, Callable[[Path, UploadBudgets], None]] = {
    "onnx": check_onnx,
    "pt2": check_pt2,
    "npz": check_npz,
    "safetensors": check_safetensors,
}


def check_file(fmt: str, path: Path, max_bytes: int, budgets: UploadBudgets | None = None) -> None:
    """Run the check for ``fmt`` on ``path`` within ``budgets`` (default: the defaults with
    ``max_bytes`` as the file limit); UploadRejectedError says what is wrong and what is accepted."""
    try:
        check = CHECKS[fmt]
    except KeyError:
        raise UploadRejectedError(f"unknown format {fmt!r}; accepted: {', '.join(CHECKS)}") from None
    check(path, budgets or UploadBudgets(max_file_bytes=max_bytes))
