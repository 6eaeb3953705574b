"""Size bounds and file checks applied before any bytes of an untrusted file are parsed.

Bounds are generous for real models and data, and stop a crafted file from making the engine
allocate far more memory than the file could hold.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import LowbitError

GiB = 1 << 30
MAX_MODEL_BYTES = 8 * GiB
MAX_DATA_BYTES = 16 * GiB
# A zip archive whose members inflate beyond this many times its own size is refused (zip bombs);
# real .npz/.pt2 files are stored uncompressed or deflate a few times at most.
MAX_INFLATION = 64
MAX_ARCHIVE_MEMBERS = 100_000
# Example inputs and shape probes are built from a model's declared input shape before any data is
# seen: a declaration must not size an allocation (a 137-byte ONNX file can declare a 4 TB input).
# 32 Mi elements (128 MiB of float32) per input covers video and high-resolution image models.
MAX_PROBE_ELEMENTS = 1 << 25


def checked_file(
    path: str | os.PathLike[str],
    *,
    kind: str,
    suffixes: tuple[str, ...],
    max_bytes: int,
    error: type[LowbitError],
) -> Path:
    """Return ``path`` as a Path after checking it is a regular file with an accepted suffix and size.

    Raises ``error`` (a LowbitError subclass) naming the file, the problem and what is accepted.
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise error(
            f"{kind} file {str(p)!r}: unsupported extension {p.suffix!r}; accepted: {', '.join(suffixes)}"
        )
    if not p.exists():
        raise error(f"{kind} file {str(p)!r} does not exist")
    if not p.is_file():
        raise error(f"{kind} file {str(p)!r} is not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise error(f"{kind} file {str(p)!r} is empty")
    if size > max_bytes:
        raise error(f"{kind} file {str(p)!r} is {size} bytes; the limit is {max_bytes} bytes")
    return p


def check_zip_budget(path: Path, infos: list, *, kind: str, max_bytes: int, error: type[LowbitError]) -> None:
    """Refuse archives with too many members, or whose members inflate far beyond the file's size.

    ``infos`` is ``zipfile.ZipFile.infolist()``; checked before any member is decompressed.
    """
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise error(f"{kind} file {str(path)!r} has {len(infos)} members; the limit is {MAX_ARCHIVE_MEMBERS}")
    total = sum(info.file_size for info in infos)
    budget = min(max_bytes, max(path.stat().st_size, 1 << 20) * MAX_INFLATION)
    if total > budget:
        raise error(
            f"{kind} file {str(path)!r} declares {total} uncompressed bytes, more than its size allows "
            f"({budget} bytes): a truncated, corrupt or zip-bomb archive"
        )


def check_probe_shape(shape: list[int], *, what: str, error: type[LowbitError]) -> None:
    """Refuse to build an example tensor of ``shape`` for ``what`` when it has more than
    :data:`MAX_PROBE_ELEMENTS` elements (checked before allocating)."""
    numel = 1
    for dim in shape:
        numel *= max(int(dim), 0)
    if numel > MAX_PROBE_ELEMENTS:
        raise error(
            f"{what} declares shape {list(shape)} ({numel} elements); example inputs are limited to "
            f"{MAX_PROBE_ELEMENTS} elements per input: export the model with a smaller or dynamic shape"
        )
