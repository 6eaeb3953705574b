"""Reading named arrays from ``.npz`` and ``.safetensors`` files without unpickling anything.

``.npz`` members are checked from their ``.npy`` headers before numpy allocates: dtype must be
numeric or bool (object, string and structured dtypes are refused) and the declared shape must
fit in the bytes actually stored.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from core.errors import DataLoadError
from core.io.limits import MAX_DATA_BYTES, check_zip_budget, checked_file

SUFFIXES = (".npz", ".safetensors")
_KINDS = "biuf"  # bool, signed, unsigned, float


def _fail(path: Path, what: str) -> DataLoadError:
    return DataLoadError(
        f"data file {str(path)!r}: {what}; accepted: .npz (numpy.savez, numeric arrays) or .safetensors"
    )


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[int, ...]:
    """The member's shape, after checking its dtype and that the shape fits the bytes stored."""
    key = info.filename[: -len(".npy")]
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise _fail(path, f"array {key!r} uses .npy format {version}, which is not read")
        except ValueError as exc:
            raise _fail(path, f"array {key!r} has a corrupt .npy header ({exc})") from exc
        header_bytes = member.tell()
    if dtype.hasobject or dtype.kind not in _KINDS or dtype.fields is not None:
        raise _fail(path, f"array {key!r} has dtype {dtype} (object/string/structured arrays are refused)")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    stored = info.file_size - header_bytes
    if declared != stored:
        raise _fail(
            path, f"array {key!r} declares shape {shape} ({declared} bytes) but stores {stored} bytes"
        )
    return tuple(int(d) for d in shape)


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _fail(path, f"not a valid .npz archive (truncated or corrupt?): {exc}") from exc
    shapes: dict[str, tuple[int, ...]] = {}
    with archive:
        infos = archive.infolist()
        check_zip_budget(path, infos, kind="data", max_bytes=MAX_DATA_BYTES, error=DataLoadError)
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise _fail(path, f"member {info.filename!r} is not a .npy array")
            shapes[info.filename[: -len(".npy")]] = _check_npy_header(archive, info, path)
    return shapes


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    _npz_shapes(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _fail(path, f"cannot read arrays ({exc})") from exc
    return arrays


def _check_safetensors_header(path: Path) -> None:
    # The header length is the first 8 bytes; the library validates the header and every offset
    # against the file size before reading any tensor.
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or int.from_bytes(head, "little") > path.stat().st_size - 8:
        raise _fail(path, "truncated safetensors header")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {key: tuple(int(d) for d in f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, ValueError, TypeError, OSError) as exc:
        raise _fail(path, f"cannot read tensors ({exc})") from exc


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_safetensors_header(path)
    try:
        arrays = load_file(str(path))
    except (SafetensorError, ValueError, TypeError, OSError) as exc:
        raise _fail(path, f"cannot read tensors ({exc})") from exc
    for key, array in arrays.items():
        if array.dtype.kind not in _KINDS:
            raise _fail(path, f"tensor {key!r} has dtype {array.dtype}, which is not numeric")
    return arrays


def load_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every named array in a ``.npz`` or ``.safetensors`` file, in file order.

    Raises DataLoadError for a missing/empty/oversized file, a wrong extension, a corrupt or
    truncated archive, object/string dtypes (pickles), or headers that declare more data than stored.
    """
    p = checked_file(path, kind="data", suffixes=SUFFIXES, max_bytes=MAX_DATA_BYTES, error=DataLoadError)
    arrays = _load_npz(p) if p.suffix.lower() == ".npz" else _load_safetensors(p)
    if not arrays:
        raise _fail(p, "the file holds no arrays")
    return arrays


def read_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Every array's shape in a ``.npz`` or ``.safetensors`` file, read from headers only (nothing
    inflated or allocated), after the same header checks as :func:`load_tensors`."""
    p = checked_file(path, kind="data", suffixes=SUFFIXES, max_bytes=MAX_DATA_BYTES, error=DataLoadError)
    shapes = _npz_shapes(p) if p.suffix.lower() == ".npz" else _safetensors_shapes(p)
    if not shapes:
        raise _fail(p, "the file holds no arrays")
    return shapes
